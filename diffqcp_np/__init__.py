"""diffqcp_np: solve convex cone programs with quadratic objectives and differentiate them.

A drop-in for diffcp's API (``solve_and_derivative`` and friends) with exact derivatives
that include the quadratic term ``P``, power cones and a direct (factorise-once) mode.
"""

from . import cones, utils
from ._version import __version__
from .batch import solve_and_derivative_batch, solve_only_batch
from .cone_program import (
    derivative,
    solve_and_derivative,
    solve_and_derivative_internal,
    solve_internal,
    solve_only,
)
from .compat import install_as_diffcp
from .cones import EXP, EXP_DUAL, POS, POWER, PSD, SOC, ZERO
from .derivative import InaccurateDerivativeWarning, NonDifferentiableWarning
from .solvers import SolverError

__all__ = [
    "EXP", "EXP_DUAL", "InaccurateDerivativeWarning", "NonDifferentiableWarning", "POS",
    "POWER", "PSD", "SOC", "SolverError", "ZERO", "__version__", "cone_program", "cones",
    "derivative", "install_as_diffcp", "solve_and_derivative", "solve_and_derivative_batch",
    "solve_and_derivative_internal", "solve_internal", "solve_only", "solve_only_batch",
    "utils",
]
