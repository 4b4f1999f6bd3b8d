"""The forward solvers by name: one module per solver, registered when it imports.

Each module (``scs``, ``clarabel``, ``ecos``, ``batched_ipm``) provides ``solve`` and
``prepare`` with the signatures of :mod:`~diffqcp_np.solvers.scs`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Known solver names (upper case) and the module that wraps each.
KNOWN_SOLVERS = {"SCS": "scs", "CLARABEL": "clarabel", "ECOS": "ecos", "IPM": "batched_ipm"}

#: The solver ``"auto"`` falls back to where the interior-point method does not apply.
AUTO_FALLBACK = "SCS"


def _register() -> dict[str, ModuleType]:
    registry = {}
    for name, module in KNOWN_SOLVERS.items():
        try:
            registry[name] = importlib.import_module(f"diffqcp_np.solvers.{module}")
        except ImportError:
            continue
    return registry


_SOLVERS = _register()


def available_solvers() -> list[str]:
    """Names of the installed forward solvers, e.g. ``["SCS", "CLARABEL", "ECOS"]``."""
    return list(_SOLVERS)


def solver_module(solve_method: str) -> ModuleType:
    """The module of an installed solver.

    Raises
    ------
    ValueError
        On an unknown or uninstalled solver.
    """
    name = str(solve_method).upper()
    if name not in _SOLVERS:
        reason = "is not installed" if name in KNOWN_SOLVERS else "is unknown"
        raise ValueError(
            f"solve_method {solve_method!r} {reason}; available solvers: {available_solvers()}"
        )
    return _SOLVERS[name]
