"""The single-problem pipeline: check the mode and options, validate the data, solve, and
build the derivative at the (refined) solution.

:mod:`~diffqcp_np.cone_program` (one problem), :mod:`~diffqcp_np.batch` (many) and
:mod:`~diffqcp_np.gpu.api` (the device derivative) run their problems through these
functions, so that a problem is solved and differentiated the same way whatever entry
point it came through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

from ._validation import ProblemData, check_problem
from .derivative import LPGD_MODES, MODES, LPGDDerivative, SolutionDerivative
from .derivative.convexity import check_positive_semidefinite
from .derivative.patterns import QuadraticTerm
from .derivative.smoothing import SmoothedDerivative
from .derivative.solution_refinement import Refinement, ResidualMap, refine_solution
from .solvers import SolverError, SolverResult, solve_cone_program

DEFAULT_MODE = "direct"
DEFAULT_SOLVER = "SCS"

# Options of the derivative (not of the forward solver), accepted in ``derivative_kwargs``.
LPGD_OPTIONS = ("tau", "rho")
#: The option of the smoothed derivative (:mod:`~diffqcp_np.derivative.smoothing`).
SMOOTHING = "smoothing"


def check_mode(mode: str | None) -> str:
    """``mode``, or the default for None.

    Raises
    ------
    ValueError
        If it is not one of :data:`~diffqcp_np.derivative.MODES`.
    """
    mode = DEFAULT_MODE if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; the supported modes are {list(MODES)}")
    return mode


def derivative_options(kwargs: dict) -> dict:
    """``kwargs["derivative_kwargs"]`` popped, as a new dict (empty when absent or None).

    Raises
    ------
    TypeError
        If it is not a mapping.
    """
    options = kwargs.pop("derivative_kwargs", None)
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError("derivative_kwargs must be a dict of derivative options, got "
                        f"{type(options).__name__}")
    return dict(options)


def checked_problem(A, b, c, cone_dict, P) -> tuple[ProblemData, QuadraticTerm]:
    """Validated data of a problem to solve, and its quadratic term (P positive
    semidefinite: a solver given another P fails or returns a point that is not
    optimal)."""
    data = check_problem(A, b, c, cone_dict, P)
    quadratic = QuadraticTerm(data.P, data.n)
    check_positive_semidefinite(quadratic.full)
    return data, quadratic


def forward_solve(data: ProblemData, quadratic: QuadraticTerm, solve_method: str | None,
                  warm_start, raise_on_error: bool, solver_kwargs: dict) -> SolverResult:
    """The forward solve of a validated problem (``solve_method`` None: the default solver)."""
    return solve_cone_program(
        data.A, data.b, data.c, data.cones, P=quadratic.full,
        solve_method=solve_method or DEFAULT_SOLVER, warm_start=warm_start,
        raise_on_error=raise_on_error, **solver_kwargs,
    )


def forward_for_lpgd(solve_method: str | None, solver_kwargs: dict) -> Callable:
    """A forward solve for the LPGD re-solves, with the caller's solver and settings."""
    method = (solve_method or DEFAULT_SOLVER).upper()

    def forward(A, b, c, cones, P, warm_start):
        result = solve_cone_program(
            A, b, c, cones, P=P, solve_method=method,
            warm_start=warm_start if method == "SCS" else None, raise_on_error=True,
            **solver_kwargs,
        )
        return result.x, result.y, result.s

    return forward


def make_derivative(data: ProblemData, quadratic: QuadraticTerm, x, y, s, mode: str,
                    solve_method: str | None, solver_kwargs: dict, derivative_kwargs: dict,
                    refine: bool = False) -> Refinement:
    """The derivative at ``(x, y, s)``, refined first if ``refine`` (exact modes; the LPGD
    modes re-solve and are neither refined nor checked, and ``smoothing`` in
    ``derivative_kwargs`` gives the smoothed derivative, at the smoothed solution, not
    refined: their report is None).

    Raises
    ------
    ValueError
        On ``smoothing`` with an LPGD mode, or unknown LPGD options.
    """
    if SMOOTHING in derivative_kwargs:
        if mode in LPGD_MODES:
            raise ValueError(f"smoothing is an option of the exact modes, not of {mode!r}")
        options = dict(derivative_kwargs)
        smoothed = SmoothedDerivative(data, x, y, s, mode, quadratic=quadratic,
                                      smoothing=options.pop(SMOOTHING), **options)
        return Refinement(smoothed, x, y, s, None)
    if mode in LPGD_MODES:
        options = dict(derivative_kwargs)
        unknown = sorted(set(options) - set(LPGD_OPTIONS))
        if unknown:
            raise ValueError(f"unknown derivative_kwargs {unknown} for mode {mode!r}")
        lpgd = LPGDDerivative(data, x, y, s, mode, forward_for_lpgd(solve_method, solver_kwargs),
                              quadratic=quadratic, **options)
        return Refinement(lpgd, lpgd.x, lpgd.y, lpgd.s, None)
    options = {k: v for k, v in derivative_kwargs.items() if k not in LPGD_OPTIONS}

    def build(x, y, s, previous, same_faces):
        return SolutionDerivative(
            data, x, y, s, mode=mode, quadratic=quadratic,
            A_pattern=None if previous is None else previous.A_pattern, reuse=previous,
            same_faces=same_faces, **options)

    return refine_solution(ResidualMap(data, quadratic.full), x, y, s, build, refine=refine)


def failed_derivative(status: str) -> tuple[Callable, Callable]:
    """``D`` and ``DT`` of a problem whose forward solve failed: both raise
    :class:`SolverError` naming the status."""
    def unavailable(*args, **kwargs):
        raise SolverError(f"no derivative: the forward solve ended with status {status!r}")

    return unavailable, unavailable
