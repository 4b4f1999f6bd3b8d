"""Forward solver: SCS (splitting conic solver, version 3).

SCS takes the problem in exactly our form: the same row order, cone keys and PSD
vectorisation, dual exponential cones (``ed``) and dual power cones (negative
``alpha``). ``info`` is SCS's own information dictionary (``status``, ``status_val``,
``iter``, ``pobj``, ``dobj``, ``solve_time`` and ``setup_time`` in milliseconds, ...),
plus ``canonical_status``, ``solver`` and ``solver_status``.

:func:`prepare` sets the solver up once for the problems of a same-structure batch.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import scipy.sparse as sp
import scs

from diffqcp_np._cancel import check_stop, interrupted
from diffqcp_np.cones.spec import ConeSpec
from diffqcp_np.solvers.base import (
    FAILED,
    INFEASIBLE,
    INFEASIBLE_INACCURATE,
    OPTIMAL,
    OPTIMAL_INACCURATE,
    UNBOUNDED,
    UNBOUNDED_INACCURATE,
    SolverResult,
    as_solution_vector,
    checked_settings,
    finish,
    rejected_settings,
    upper_triangle,
)
from diffqcp_np.solvers.prepared import PreparedSolve, SharedMatrices, SharedPatterns

NAME = "SCS"

#: SCS 3 ``status_val`` to canonical status; anything else (indeterminate, failed) is
#: ``failed``, but an interrupted solve (:data:`INTERRUPTED`) raises ``KeyboardInterrupt``.
STATUS = {
    1: OPTIMAL,
    2: OPTIMAL_INACCURATE,
    -1: UNBOUNDED,
    -2: INFEASIBLE,
    -6: UNBOUNDED_INACCURATE,
    -7: INFEASIBLE_INACCURATE,
}


#: SCS 3 settings and their types (others are passed on: SCS decides).
SETTINGS = {
    "max_iters": int, "acceleration_lookback": int, "acceleration_interval": int,
    "eps_abs": float, "eps_rel": float, "eps_infeas": float, "alpha": float, "scale": float,
    "rho_x": float, "time_limit_secs": float, "normalize": bool, "adaptive_scale": bool,
    "verbose": bool, "write_data_filename": str, "log_csv_filename": str,
    "linear_solver": object,
}


#: ``status_val`` of a solve stopped by SIGINT: SCS catches Ctrl-C itself while it solves
#: (on any thread), so Python never sees it.
INTERRUPTED = -5


def _settings(verbose: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    settings = checked_settings(NAME, kwargs, {**SETTINGS, "eps": float})
    if "eps" in settings:
        eps = settings.pop("eps")
        # as diffcp: eps wins over eps_abs/eps_rel (CVXPY always adds those at 1e-5)
        settings["eps_abs"] = eps
        settings["eps_rel"] = eps
    settings["verbose"] = bool(verbose)
    return settings


def _run(data: dict, cones: dict, settings: dict, warm_start: Optional[tuple]) -> dict:
    """One SCS solve; ``KeyboardInterrupt`` if SIGINT stopped it (or had stopped the
    batch this thread works for)."""
    try:
        solver = scs.SCS(data, cones, **settings)
    except TypeError as err:  # the data are checked: an unknown or mistyped setting
        raise rejected_settings(NAME, settings, SETTINGS, err) from err
    check_stop()
    if warm_start is None:
        result = solver.solve(warm_start=False)
    else:
        x, y, s = warm_start
        result = solver.solve(warm_start=True, x=x, y=y, s=s)
    if result["info"]["status_val"] == INTERRUPTED:
        raise interrupted("SCS was interrupted (SIGINT)")
    return result


def solve(
    A: sp.csc_matrix,
    b: np.ndarray,
    c: np.ndarray,
    cones: ConeSpec,
    P: Optional[sp.csc_matrix] = None,
    warm_start: Optional[tuple] = None,
    verbose: bool = False,
    raise_on_error: bool = True,
    **kwargs: Any,
) -> SolverResult:
    """Solve the cone program with SCS.

    Parameters
    ----------
    A, b, c, cones, P
        Problem data (see :func:`diffqcp_np.solvers.solve_cone_program`); not modified.
    warm_start : tuple of numpy.ndarray, optional
        ``(x, y, s)`` to start from.
    verbose : bool
        SCS's ``verbose``.
    raise_on_error : bool
        Raise :class:`~diffqcp_np.solvers.base.SolverError` on a status without a solution.
    **kwargs
        SCS settings (``eps_abs``, ``eps_rel``, ``max_iters``, ``acceleration_lookback``,
        ``linear_solver``, ...). ``eps`` sets ``eps_abs`` and ``eps_rel``, overriding
        them as diffcp does. As diffcp does, an inaccurate solve is repeated once with
        ``acceleration_lookback=0`` unless that setting was given.

    Returns
    -------
    SolverResult

    Raises
    ------
    KeyboardInterrupt
        If SIGINT (Ctrl-C) stopped the solve.
    """
    data = {
        "A": A,
        "b": np.array(b, dtype=np.float64),
        "c": np.array(c, dtype=np.float64),
        "P": None if P is None else upper_triangle(P),
    }
    return _solve(data, cones.to_dict(), _settings(verbose, kwargs), warm_start, raise_on_error)


def _solve(data: dict, cone_dict: dict, settings: dict, warm_start: Optional[tuple],
           raise_on_error: bool) -> SolverResult:
    """Solve (and retry an inaccurate solve without acceleration, as diffcp does)."""
    m, n = data["A"].shape
    if warm_start is not None:
        warm_start = tuple(np.array(v, dtype=np.float64) for v in warm_start)
    result = _run(data, cone_dict, settings, warm_start)
    if result["info"]["status_val"] == 2 and "acceleration_lookback" not in settings:
        result = _run(data, cone_dict, {**settings, "acceleration_lookback": 0}, warm_start)

    info = dict(result["info"])
    status = STATUS.get(info["status_val"], FAILED)
    return finish(
        NAME,
        info["status"],
        status,
        as_solution_vector(result.get("x"), n),
        as_solution_vector(result.get("y"), m),
        as_solution_vector(result.get("s"), m),
        info,
        raise_on_error,
        wording=f"Solver scs returned status {info['status']}",
    )


def prepare(cones: ConeSpec, patterns: SharedPatterns, verbose: bool = False,
            **kwargs: Any) -> PreparedSolve:
    """:func:`solve` set up once for a same-structure batch (see :mod:`.prepared`): the
    cone dict and settings are built once, ``A`` and ``P`` on the shared patterns."""
    cone_dict = cones.to_dict()
    settings = _settings(verbose, kwargs)
    matrices = SharedMatrices(patterns)

    def solve_values(A, b, c, P, warm_start, raise_on_error) -> SolverResult:
        data = {"A": matrices.A(A), "b": np.array(b, dtype=np.float64),
                "c": np.array(c, dtype=np.float64), "P": matrices.P(P)}
        return _solve(data, cone_dict, settings, warm_start, raise_on_error)

    return solve_values
