"""diffcp-compatible entry points: solve a cone program and differentiate its solution map.

Problem (SCS form), with ``P`` optional::

    minimize ½ x'Px + c'x   subject to  Ax + s = b,  s ∈ K

``solve_and_derivative`` returns ``x, y, s`` and the closures ``D`` (JVP) and ``DT``
(VJP). The signatures and return values are diffcp 1.1.9's; the default derivative mode
is ``"direct"`` (a sparse LDLᵀ of the symmetric reduced system, LU where that fails,
factored once and reused), and ``P`` is supported in every mode.

In the exact modes the forward solution is refined by Newton steps on the residual map
before it is differentiated (``refine=True``, the default; see
:mod:`~diffqcp_np.derivative.solution_refinement`): a solver's default-tolerance
solution can leave an inequality on the wrong side of its kink, and the derivative
there is wrong. The refined ``x, y, s`` are the ones returned, and where the solution
does not decide every face an :class:`InaccurateDerivativeWarning` says so.

``P`` may be the full symmetric matrix or its upper triangle. Whatever pattern was given
is the pattern of ``DT``'s ``dP``, which is the exact adjoint of ``D``'s ``dP`` argument
read in the same storage convention (with upper storage an off-diagonal gradient entry
is twice the symmetric gradient's entry).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validation import check_problem
from .backend import device_requested
from .cones import pi as cone_pi
from .derivative import EXACT_MODES, LPGD_MODES, MODES
from .derivative.convexity import check_positive_semidefinite
from .derivative.patterns import QuadraticTerm
from .derivative.smoothing import SmoothedDerivative
from .derivative.solution_refinement import warn_inaccurate
from .pipeline import (
    DEFAULT_MODE,
    DEFAULT_SOLVER,
    check_mode,
    checked_problem,
    derivative_options,
    failed_derivative,
    forward_solve,
    make_derivative,
)
from .solvers import SolverError


def derivative(A, b, c, cone_dict, x, y, s, P=None, mode: str = DEFAULT_MODE,
               solve_method: str | None = None, refine: bool = False,
               return_info: bool = False, device: str | None = None,
               **derivative_kwargs: Any):
    """Derivative of the solution map at a solution obtained elsewhere.

    The solution is checked in the exact modes: where it does not decide the face of
    every cone (e.g. an inequality with both ``y_i`` and ``s_i`` well above zero, from a
    loose tolerance) an :class:`InaccurateDerivativeWarning` says so. With
    ``refine=True`` it is first refined by Newton steps on the residual map (see
    :mod:`~diffqcp_np.derivative.solution_refinement`) and the derivative is taken at
    the refined solution.

    Parameters
    ----------
    A : sparse or dense (m, n)
    b : ndarray (m,)
    c : ndarray (n,)
    cone_dict : dict
        SCS-style cones (``z``/``f``, ``l``, ``q``, ``s``, ``ep``, ``ed``, ``p``).
    x, y, s : ndarray
        A primal-dual solution (from any solver, e.g. a GPU solver).
    P : sparse or dense (n, n), optional
        Full symmetric matrix or its upper triangle.
    mode : str, default "direct"
        ``direct``, ``dense``, ``lsqr``, ``lsmr`` (exact), or ``lpgd``, ``lpgd_right``,
        ``lpgd_left`` (which re-solve perturbed problems with ``solve_method``).
    solve_method : str, optional
        Forward solver for the LPGD modes (default SCS).
    refine : bool, default False
        Refine the solution before differentiating (exact modes).
    return_info : bool, default False
        Also return a dict with the solution the derivative is taken at (``x``, ``y``,
        ``s``: the refined one with ``refine=True``, the smoothed one with
        ``smoothing``) and ``refinement``, the report of
        :class:`~diffqcp_np.derivative.solution_refinement.RefinementReport` as a dict
        (None in the LPGD modes and with ``smoothing``); with ``smoothing`` also
        ``smoothing``, the :class:`~diffqcp_np.derivative.smoothing.SmoothingReport`
        as a dict.
    device : {None, "cpu", "cuda"}, optional
        Where to differentiate: None follows the arrays (CuPy arrays and
        ``cupyx.scipy.sparse`` matrices select the device, see
        :mod:`diffqcp_np.gpu.api`: direct mode only, ``D``/``DT`` on device arrays,
        the solution differentiated as given, without refinement or face check).
    **derivative_kwargs
        Linear-solver options (``factorization``, ``permc_spec``; ``atol``, ``btol``,
        ``maxiter``; on the device ``refine_steps``), the LPGD parameters ``tau`` and
        ``rho``, or ``smoothing=mu`` (exact modes; zero, nonnegative and second-order
        cones): the derivative of the barrier-smoothed problem's solution map, defined
        and informative also where the exact one is zero or does not exist (see
        :mod:`~diffqcp_np.derivative.smoothing`; ``refine`` is then unused).

    Returns
    -------
    D : callable
        ``D(dA, db, dc, dP=None) -> (dx, dy, ds)``.
    DT : callable
        ``DT(dx, dy, ds, return_dP=False) -> (dA, db, dc[, dP])``.
    info : dict
        Only with ``return_info=True``.
    """
    if device_requested(device, dict(A=A, b=b, c=c, x=x, y=y, s=s, P=P)):
        from .gpu import api

        return api.derivative(A, b, c, cone_dict, x, y, s, P=P, mode=mode, refine=refine,
                              return_info=return_info, **derivative_kwargs)
    mode = check_mode(mode)
    data = check_problem(A, b, c, cone_dict, P)
    quadratic = QuadraticTerm(data.P, data.n)
    check_positive_semidefinite(quadratic.full, factor=False)  # no solve: the diagonal
    result = make_derivative(data, quadratic, x, y, s, mode, solve_method, {},
                             derivative_kwargs, refine=refine)
    if result.report is not None:
        warn_inaccurate(result.report)
    D, DT = result.derivative.jvp, result.derivative.vjp
    if not return_info:
        return D, DT
    report = None if result.report is None else result.report.as_dict()
    info = {"x": result.x, "y": result.y, "s": result.s, "refinement": report}
    smoothed = result.derivative
    if isinstance(smoothed, SmoothedDerivative):
        info.update(x=smoothed.x, y=smoothed.y, s=smoothed.s,
                    smoothing=smoothed.smoothing.as_dict())
    return D, DT, info


def solve_internal(A, b, c, cone_dict, solve_method: str | None = None, warm_start=None,
                   raise_on_error: bool = True, P=None, **kwargs: Any) -> dict:
    """Solve a cone program; returns a dict with ``x``, ``y``, ``s`` and ``info``.

    ``info`` holds the solver's own report plus SCS-style keys (``status``, ``iter``,
    ``solve_time``, ``setup_time``, ``pobj``). With ``raise_on_error=False`` a failed solve
    returns its status instead of raising :class:`SolverError`.
    """
    data, quadratic = checked_problem(A, b, c, cone_dict, P)
    result = forward_solve(data, quadratic, solve_method, warm_start, raise_on_error, kwargs)
    return {"x": result.x, "y": result.y, "s": result.s, "info": result.info}


def solve_and_derivative_internal(A, b, c, cone_dict, solve_method: str | None = None,
                                  warm_start=None, mode: str = DEFAULT_MODE,
                                  raise_on_error: bool = True, P=None, refine: bool = True,
                                  device: str | None = None, **kwargs: Any) -> dict:
    """Solve and set up the derivative; returns ``x``, ``y``, ``s``, ``info``, ``D``, ``DT``.

    ``kwargs`` go to the forward solver, except ``derivative_kwargs`` (a dict of options
    for the derivative, as in diffcp). With ``refine`` (exact modes) the solution is
    refined before it is differentiated and returned refined; ``info["refinement"]`` is
    the report (:class:`~diffqcp_np.derivative.solution_refinement.RefinementReport` as a
    dict). With device arrays or ``device="cuda"`` the forward solve runs on the host
    and the derivative on the device (:mod:`diffqcp_np.gpu.api`; no refinement there).
    """
    if device_requested(device, dict(A=A, b=b, c=c, P=P)):
        from .gpu import api

        return api.solve_and_derivative_internal(
            A, b, c, cone_dict, solve_method=solve_method, warm_start=warm_start, mode=mode,
            raise_on_error=raise_on_error, P=P, **kwargs)
    mode = check_mode(mode)
    derivative_kwargs = derivative_options(kwargs)
    data, quadratic = checked_problem(A, b, c, cone_dict, P)
    result = forward_solve(data, quadratic, solve_method, warm_start, raise_on_error, kwargs)
    out = {"x": result.x, "y": result.y, "s": result.s, "info": result.info}
    if not result.ok:
        out["D"], out["DT"] = failed_derivative(result.status)
        return out
    refined = make_derivative(data, quadratic, result.x, result.y, result.s, mode,
                               solve_method, kwargs, derivative_kwargs, refine=refine)
    if isinstance(refined.derivative, SmoothedDerivative):
        out["info"]["smoothing"] = refined.derivative.smoothing.as_dict()
    if refined.report is not None:
        warn_inaccurate(refined.report)
        out["info"]["refinement"] = refined.report.as_dict()
        out["x"], out["y"], out["s"] = refined.x, refined.y, refined.s
    out["D"], out["DT"] = refined.derivative.jvp, refined.derivative.vjp
    return out


def solve_and_derivative(A, b, c, cone_dict, warm_start=None, mode: str = DEFAULT_MODE,
                         solve_method: str = DEFAULT_SOLVER, P=None, refine: bool = True,
                         **kwargs: Any):
    """Solve a cone program and return its solution and the derivative of its solution map.

    Parameters
    ----------
    A : scipy.sparse matrix or ndarray (m, n)
        Constraint matrix. Its stored pattern, explicit zeros included, is the pattern of
        the ``dA`` that ``DT`` returns. Never modified.
    b : ndarray (m,)
    c : ndarray (n,)
    cone_dict : dict
        SCS-style cones: ``z`` (alias ``f``), ``l``, ``q``, ``s``, ``ep``, ``ed``, ``p``.
    warm_start : tuple (x, y, s), optional
        Warm start for SCS (and Clarabel where supported).
    mode : str, default "direct"
        ``direct`` (LDLᵀ of the reduced system, factored once), ``dense``, ``lsqr``,
        ``lsmr``, ``lpgd``, ``lpgd_right`` or ``lpgd_left``.
    solve_method : {"SCS", "Clarabel", "ECOS"}, default "SCS"
    P : scipy.sparse matrix or ndarray (n, n), optional
        Quadratic objective ``½ x'Px``: full symmetric or upper triangle.
    refine : bool, default True
        In the exact modes, refine the solution by Newton steps on the residual map before
        differentiating (:mod:`~diffqcp_np.derivative.solution_refinement`); an
        :class:`InaccurateDerivativeWarning` reports a solution that does not decide the
        face of every cone, refined or not.
    **kwargs
        Forward-solver settings (``eps``, ``verbose``, ...), ``derivative_kwargs``
        (a dict: linear-solver options, ``tau``/``rho`` for the LPGD modes, or
        ``smoothing=mu`` for the smoothed derivative, see :func:`derivative`; the
        solution returned is then the solver's, ``info["smoothing"]`` the Newton
        steps' report), and
        ``device`` (see :func:`derivative`: CuPy inputs or ``device="cuda"``
        differentiate on the device, the forward solve staying on the host).

    Returns
    -------
    x, y, s : ndarray
        Primal solution, dual solution and slack (refined, with ``refine``).
    D : callable
        ``D(dA, db, dc, dP=None) -> (dx, dy, ds)``, the Jacobian-vector product.
    DT : callable
        ``DT(dx, dy, ds, return_dP=False) -> (dA, db, dc[, dP])``, the vector-Jacobian
        product; ``dA`` is CSC on exactly A's stored pattern.

    Raises
    ------
    SolverError
        If the problem is infeasible or unbounded, or the solver fails.
    ValueError
        On malformed input (naming the argument).
    """
    result = solve_and_derivative_internal(
        A, b, c, cone_dict, solve_method=solve_method, warm_start=warm_start, mode=mode,
        raise_on_error=True, P=P, refine=refine, **kwargs,
    )
    return result["x"], result["y"], result["s"], result["D"], result["DT"]


def solve_only(A, b, c, cone_dict, warm_start=None, solve_method: str = DEFAULT_SOLVER,
               P=None, **kwargs: Any):
    """Solve a cone program without setting up the derivative; returns ``x, y, s``."""
    result = solve_internal(A, b, c, cone_dict, solve_method=solve_method,
                            warm_start=warm_start, raise_on_error=True, P=P, **kwargs)
    return result["x"], result["y"], result["s"]


def pi(z, cones):
    """Projection of ``z = (u, v, w)`` onto ``R^n × K* × R_+`` (diffcp.cone_program.pi).

    ``cones`` is a cone dictionary or :func:`~diffqcp_np.cones.parse_cone_dict`'s output.
    """
    u, v, w = z
    return np.concatenate([np.asarray(u, dtype=float), cone_pi(v, cones, dual=True),
                           np.maximum(np.atleast_1d(np.asarray(w, dtype=float)), 0)])


# diffcp defines its batch functions in ``diffcp.cone_program``; ours live in ``batch``,
# loaded on first access so that importing this module does not load the batch machinery.
_BATCH_NAMES = ("solve_and_derivative_batch", "solve_only_batch")


def __getattr__(name: str):
    if name in _BATCH_NAMES:
        from . import batch

        return getattr(batch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EXACT_MODES", "LPGD_MODES", "MODES", "SolverError", "derivative", "pi",
    "solve_and_derivative", "solve_and_derivative_internal", "solve_internal", "solve_only",
]
