"""Run unmodified diffcp users (CVXPY's ``requires_grad``, cvxpylayers, scripts) on diffqcp_np.

:func:`install_as_diffcp` registers this package under the name ``diffcp`` in
``sys.modules``, with the submodules ``diffcp.cone_program``, ``diffcp.cones`` and
``diffcp.utils``. Every later ``import diffcp`` (or ``from diffcp... import ...``) then gets
diffqcp_np, whether or not the real diffcp is installed.

When to call it
---------------
- **CVXPY** (``Problem.solve(requires_grad=True)``, ``backward()``, ``derivative()``):
  any time before the solve. CVXPY imports diffcp once when ``cvxpy`` is imported (to
  list the installed solvers) but again inside every DIFFCP solve, so the solve, and the
  ``D``/``DT`` that ``backward``/``derivative`` call, come from whatever ``diffcp`` is
  registered at solve time. If the real diffcp is not installed and ``cvxpy`` was
  imported first, CVXPY's list of installed solvers lacks ``DIFFCP``; this function adds
  it, so ``requires_grad=True`` works either way.
- **cvxpylayers** and other code that does ``import diffcp`` at the top of a module:
  before that module is imported. A module imported earlier keeps the real diffcp; this
  function warns and names such modules.

The real diffcp's modules, if they were imported, are taken out of ``sys.modules`` (so no
stale ``diffcp.*`` submodule is found) and put back by :meth:`DiffcpAlias.uninstall`.

CVXPY's DIFFCP interface calls ``diffcp.solve_and_derivative_internal(A, b, c, cones,
verbose=..., warm_start=..., raise_on_error=False, solve_method=..., eps_abs=..., ...)``
and reads ``info["status_val"]``, ``info["solve_time"]``, ``info["setup_time"]`` (SCS),
``info["status"]``, ``info["solveTime"]``, ``info["setupTime"]`` (ECOS, Clarabel),
``info["iter"]``, ``info["pobj"]``, and ``result["D"]``, ``result["DT"]``, ``result["s"]``;
it also parses ``diffcp.__version__`` as ``X.Y.Z`` and refuses ``1.0.z`` with ``z < 15``.
diffqcp_np provides all of these; the default derivative mode is ``direct``.
"""

from __future__ import annotations

import sys
import types
import warnings
from typing import Optional

__all__ = ["DiffcpAlias", "install_as_diffcp"]

ALIAS = "diffcp"
#: diffcp's submodules that diffqcp_np provides under the same names.
SUBMODULES = ("cone_program", "cones", "utils")

_CVXPY_DEFINES = "cvxpy.reductions.solvers.defines"
_CVXPY_LISTS = ("INSTALLED_SOLVERS", "INSTALLED_CONIC_SOLVERS")

_active: Optional["DiffcpAlias"] = None


class DiffcpAlias:
    """Handle returned by :func:`install_as_diffcp`; :meth:`uninstall` undoes it.

    Also a context manager: ``with install_as_diffcp(): ...`` uninstalls on exit.

    Attributes
    ----------
    replaced : dict
        The ``sys.modules`` entries ``diffcp`` and ``diffcp.*`` found at installation
        (the real diffcp's modules, if it had been imported).
    stale_references : list of str
        Modules that held a reference to the real diffcp at installation and keep using it.
    """

    def __init__(self, replaced: dict, cvxpy_lists: list, stale_references: list):
        self.replaced = replaced
        self.stale_references = stale_references
        self._cvxpy_lists = cvxpy_lists
        self.active = True

    def uninstall(self) -> None:
        """Restore ``sys.modules`` (and CVXPY's installed-solver lists) as they were."""
        global _active
        if not self.active:
            return
        for name in [k for k in sys.modules if k == ALIAS or k.startswith(ALIAS + ".")]:
            del sys.modules[name]
        sys.modules.update(self.replaced)
        for lst in self._cvxpy_lists:
            while "DIFFCP" in lst:
                lst.remove("DIFFCP")
        self.active = False
        if _active is self:
            _active = None

    def __enter__(self) -> "DiffcpAlias":
        return self

    def __exit__(self, *exc) -> None:
        self.uninstall()

    def __repr__(self) -> str:
        state = "active" if self.active else "uninstalled"
        return f"<DiffcpAlias {state}, replaced {sorted(self.replaced)}>"


def _package() -> types.ModuleType:
    return sys.modules[__name__.rpartition(".")[0]]


def _modules_of(old: dict) -> set:
    return {id(mod) for mod in old.values() if isinstance(mod, types.ModuleType)}


def _holds_reference(module: types.ModuleType, old_ids: set) -> bool:
    namespace = getattr(module, "__dict__", None)
    if not isinstance(namespace, dict):
        return False
    for value in list(namespace.values()):
        if id(value) in old_ids:
            return True
        owner = getattr(value, "__module__", None) if callable(value) else None
        if isinstance(owner, str) and (owner == ALIAS or owner.startswith(ALIAS + ".")):
            return True
    return False


def _stale_references(old: dict) -> list:
    """Modules (other than diffcp's own) whose globals hold the real diffcp or its objects."""
    old_ids = _modules_of(old)
    if not old_ids:
        return []
    stale, seen = [], set()
    for name, module in list(sys.modules.items()):
        if name == ALIAS or name.startswith(ALIAS + ".") or module is None:
            continue
        if id(module) in seen:  # one module under two names (__main__, __mp_main__)
            continue
        seen.add(id(module))
        try:
            if _holds_reference(module, old_ids):
                stale.append(name)
        except Exception:  # a module with an odd namespace: not ours to judge
            continue
    return sorted(stale)


def _register_with_cvxpy() -> list:
    """Add DIFFCP to CVXPY's installed solvers if CVXPY listed them without it."""
    defines = sys.modules.get(_CVXPY_DEFINES)
    if defines is None:
        return []
    lists = [getattr(defines, name, None) for name in _CVXPY_LISTS]
    lists = [lst for lst in lists if isinstance(lst, list) and "DIFFCP" not in lst]
    if not lists:
        return []
    try:  # CVXPY's own check (imports diffcp, i.e. us now, and parses __version__)
        from cvxpy.reductions.solvers.conic_solvers.diffcp_conif import DIFFCP

        DIFFCP().import_solver()
    except Exception as exc:  # pragma: no cover - only with an unusual version string
        warnings.warn(f"CVXPY does not accept diffqcp_np as diffcp: {exc!r}", stacklevel=3)
        return []
    for lst in lists:
        lst.append("DIFFCP")
    return lists


def install_as_diffcp(warn: bool = True) -> DiffcpAlias:
    """Make ``import diffcp`` return diffqcp_np (submodules included).

    Parameters
    ----------
    warn : bool, default True
        Warn when modules imported earlier hold references to the real diffcp (they keep
        using it; import them after calling this function instead).

    Returns
    -------
    DiffcpAlias
        Call its ``uninstall()`` (or use it as a context manager) to restore the previous
        ``diffcp`` modules. Calling this function again while installed returns the same
        handle.

    Examples
    --------
    >>> import diffqcp_np
    >>> alias = diffqcp_np.install_as_diffcp()
    >>> import diffcp
    >>> diffcp is diffqcp_np
    True
    >>> alias.uninstall()
    """
    global _active
    package = _package()
    if _active is not None and _active.active and sys.modules.get(ALIAS) is package:
        return _active

    replaced = {name: mod for name, mod in sys.modules.items()
                if name == ALIAS or name.startswith(ALIAS + ".")}
    stale = _stale_references(replaced)
    for name in replaced:
        del sys.modules[name]
    sys.modules[ALIAS] = package
    for sub in SUBMODULES:
        sys.modules[f"{ALIAS}.{sub}"] = getattr(package, sub)

    cvxpy_lists = _register_with_cvxpy()
    _active = DiffcpAlias(replaced, cvxpy_lists, stale)
    if warn and stale:
        warnings.warn(
            "diffqcp_np is now registered as 'diffcp', but these modules imported the real "
            f"diffcp earlier and keep using it: {', '.join(stale)}. Call "
            "diffqcp_np.install_as_diffcp() before importing them.",
            RuntimeWarning, stacklevel=2,
        )
    return _active
