"""diffqcp_np: solve convex cone programs with quadratic objectives and differentiate them.

A drop-in for diffcp's API (``solve_and_derivative`` and friends) with exact derivatives
that include the quadratic term ``P``, power cones and a direct (factorise-once) mode.

The public names are imported on first use (PEP 562): ``import diffqcp_np`` loads
neither SciPy, Numba nor the solvers; ``diffqcp_np.solve_and_derivative`` (or ``from
diffqcp_np import ...``) does.
"""

from __future__ import annotations

import importlib
import sys
import types

from ._version import __version__ as __version__

#: Public name -> the module that defines it.
_EXPORTS = {
    "solve_and_derivative_batch": ".batch",
    "solve_only_batch": ".batch",
    "derivative": ".cone_program",
    "solve_and_derivative": ".cone_program",
    "solve_and_derivative_internal": ".cone_program",
    "solve_internal": ".cone_program",
    "solve_only": ".cone_program",
    "install_as_diffcp": ".compat",
    "EXP": ".cones",
    "EXP_DUAL": ".cones",
    "POS": ".cones",
    "POWER": ".cones",
    "PSD": ".cones",
    "SOC": ".cones",
    "ZERO": ".cones",
    "InaccurateDerivativeWarning": ".derivative",
    "NonDifferentiableWarning": ".derivative",
    "NonFiniteDerivativeWarning": ".derivative",
    "SolverError": ".solvers",
    "warm_up": "._warm_up",
    "clear_caches": ".caches",
}

#: Subpackages and modules reachable as attributes before they are imported.
_SUBMODULES = ("batch", "caches", "compat", "cone_program", "cones", "layers", "solvers",
               "utils")

__all__ = sorted([*_EXPORTS, "__version__", "cone_program", "cones", "utils"])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))


class _Package(types.ModuleType):
    """The package's module type: the name ``derivative`` stays the function.

    Importing a submodule binds it as an attribute of its package; the subpackage
    ``derivative`` (``diffqcp_np.derivative.*``, reached through ``sys.modules``) would
    then hide the public function ``derivative``, whenever it happened to be imported.
    """

    def __setattr__(self, name: str, value) -> None:
        if name == "derivative" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
