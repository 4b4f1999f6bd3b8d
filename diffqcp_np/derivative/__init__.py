"""The derivative of the solution map: the K system, its solvers, JVP/VJP and LPGD."""

from .linear_solvers import InaccurateDerivativeWarning, NonDifferentiableWarning
from .lpgd import LPGD_MODES, LPGDDerivative
from .patterns import MatrixPattern, QuadraticTerm
from .solution_map import EXACT_MODES, NonFiniteDerivativeWarning, SolutionDerivative

#: Every accepted derivative mode.
MODES = EXACT_MODES + LPGD_MODES

__all__ = [
    "EXACT_MODES", "LPGD_MODES", "MODES", "InaccurateDerivativeWarning", "LPGDDerivative",
    "MatrixPattern", "NonDifferentiableWarning", "NonFiniteDerivativeWarning", "QuadraticTerm",
    "SolutionDerivative",
]
