"""Forward solver: Clarabel (interior point).

Clarabel differs from our layout in three places, each handled by a change of rows
(:class:`~diffqcp_np.solvers.base.RowTransform`) that is undone on ``y`` and ``s``:

- PSD cones: Clarabel's ``PSDTriangleConeT`` stores the scaled *upper* triangle
  column by column, i.e. our lower-triangle entries in row-major order; the rows of
  each PSD block are permuted (for every side ``k``).
- dual exponential cones: ``(u, v, w) -> (-v, -u, e w)`` maps K_exp* onto K_exp.
- dual power cones (negative ``alpha``): ``(u, v, w) -> (u/a, v/(1-a), w)`` maps
  K_a* onto K_a with ``a = |alpha|``.

Clarabel (0.11) has no warm start: a ``warm_start`` is accepted and ignored.

Ctrl-C: Clarabel does not look at signals, so in the main thread ``KeyboardInterrupt``
is raised when its solve returns. On a worker thread of a batch
(:mod:`diffqcp_np._cancel`) its termination callback stops it within an iteration once
the batch is stopped. (A Python callback cannot serve the main thread: an interrupt
raised inside it is printed and dropped by Clarabel.)

:func:`prepare` sets the solver up once for the problems of a same-structure batch.

``info`` holds Clarabel's own results (``obj_val``, ``obj_val_dual``, ``iterations``,
``r_prim``, ``r_dual``, and ``solver_status``, the name of its status), the SCS-style keys
of :func:`~diffqcp_np.solvers.base.scs_style_info` (``solve_time`` and ``setup_time`` in
milliseconds, ``solveTime`` and ``setupTime`` in seconds; the setup time is the time
spent building the Clarabel solver object), plus ``canonical_status`` and ``solver``.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import clarabel
import numpy as np
import scipy.sparse as sp

from diffqcp_np._cancel import Stopped, check_stop, stop_event
from diffqcp_np.cones.spec import ConeSpec, vec_psd_dim
from diffqcp_np.solvers.base import (
    EXP_DUAL_TO_EXP,
    EXP_DUAL_TO_EXP_INV,
    FAILED,
    INFEASIBLE,
    INFEASIBLE_INACCURATE,
    OPTIMAL,
    OPTIMAL_INACCURATE,
    UNBOUNDED,
    UNBOUNDED_INACCURATE,
    RowTransform,
    SolverResult,
    as_solution_vector,
    drop_zeros,
    dual_power_to_power,
    finish,
    scs_style_info,
    upper_triangle,
)
from diffqcp_np.solvers.prepared import PreparedSolve, SharedPatterns

NAME = "CLARABEL"

#: Clarabel status name to canonical status; anything else (MaxIterations, MaxTime,
#: NumericalError, InsufficientProgress, ...) is ``failed``.
STATUS = {
    "Solved": OPTIMAL,
    "AlmostSolved": OPTIMAL_INACCURATE,
    "PrimalInfeasible": INFEASIBLE,
    "DualInfeasible": UNBOUNDED,
    "AlmostPrimalInfeasible": INFEASIBLE_INACCURATE,
    "AlmostDualInfeasible": UNBOUNDED_INACCURATE,
}


def psd_upper_order(k: int) -> np.ndarray:
    """Positions in our PSD vectorisation of Clarabel's entries, in Clarabel's order.

    Entry ``p`` of Clarabel's vector (upper triangle, column by column) is entry
    ``order[p]`` of ours (lower triangle, column by column).
    """
    index = np.empty((k, k), dtype=np.int64)
    col, row = np.triu_indices(k)  # our order: column j, then rows i >= j
    index[row, col] = np.arange(row.size)
    # Clarabel's order: column c, rows r <= c; (r, c) upper is (c, r) lower.
    upper_col, upper_row = np.tril_indices(k)
    return index[upper_col, upper_row]


def _cones_and_rows(cones: ConeSpec) -> tuple[list, list]:
    offsets = cones.offsets
    solver_cones: list = []
    blocks: list = []
    if cones.zero:
        solver_cones.append(clarabel.ZeroConeT(cones.zero))
    if cones.nonneg:
        solver_cones.append(clarabel.NonnegativeConeT(cones.nonneg))
    solver_cones += [clarabel.SecondOrderConeT(d) for d in cones.soc]
    start = offsets["s"]
    for k in cones.psd:
        size = vec_psd_dim(k)
        if k >= 3:
            perm = sp.coo_matrix((np.ones(size), (np.arange(size), psd_upper_order(k))))
            blocks.append((start, perm, perm.T))
        solver_cones.append(clarabel.PSDTriangleConeT(k))
        start += size
    solver_cones += [clarabel.ExponentialConeT()] * (cones.exp + cones.exp_dual)
    start = offsets["ed"]
    for _ in range(cones.exp_dual):
        blocks.append((start, EXP_DUAL_TO_EXP, EXP_DUAL_TO_EXP_INV))
        start += 3
    start = offsets["p"]
    for alpha in cones.power:
        if alpha < 0:
            blocks.append((start, *dual_power_to_power(-alpha)))
        solver_cones.append(clarabel.PowerConeT(abs(alpha)))
        start += 3
    return solver_cones, blocks


def _settings(verbose: bool, kwargs: dict[str, Any]) -> "clarabel.DefaultSettings":
    settings = clarabel.DefaultSettings()
    for key, value in kwargs.items():
        if key.startswith("_") or not hasattr(settings, key):
            raise ValueError(
                f"unknown Clarabel setting {key!r}; see clarabel.DefaultSettings for the "
                "accepted names (e.g. tol_gap_abs, tol_feas, max_iter)"
            )
        try:
            setattr(settings, key, value)
        except (AttributeError, TypeError, OverflowError) as err:  # overflow: negative counts
            raise ValueError(f"invalid Clarabel setting {key}={value!r}: {err}") from err
    settings.verbose = bool(verbose)
    return settings


class _ListCSC:
    """A CSC matrix as Clarabel's Python interface reads it, with list attributes.

    Clarabel copies ``data``, ``indices`` and ``indptr`` element by element, which it
    does faster from lists than from NumPy arrays (per problem of a batch).
    """

    __slots__ = ("data", "indices", "indptr", "shape", "nnz")
    has_canonical_format = True

    def __init__(self, data: list, indices: list, indptr: list, shape: tuple[int, int]):
        self.data, self.indices, self.indptr, self.shape = data, indices, indptr, shape
        self.nnz = len(data)


def _panicked(err: BaseException, n: int, m: int, raise_on_error: bool) -> SolverResult:
    """A failed result for a Rust panic inside Clarabel (a ``BaseException`` that would
    otherwise pass every ``except Exception``): raised as :class:`SolverError` with the
    panic's message when ``raise_on_error``."""
    native = f"panic: {err}"
    info = {"panic": str(err), **scs_style_info(FAILED, 0, np.nan, np.nan, 0.0, 0.0)}
    return finish(NAME, native, FAILED, np.full(n, np.nan), np.full(m, np.nan),
                  np.full(m, np.nan), info, raise_on_error,
                  wording=f"Solver clarabel failed with a panic ({err})")


def _run(P, c, A, b, solver_cones: list, settings, rows: Optional[RowTransform],
         raise_on_error: bool) -> SolverResult:
    """Solve with Clarabel (data in its row order) and map the result back."""
    m, n = A.shape
    start = time.perf_counter()
    stop = stop_event()
    try:
        solver = clarabel.DefaultSolver(P, c, A, b, solver_cones, settings)
        setup_time = time.perf_counter() - start
        if stop is not None:
            check_stop()
            solver.set_termination_callback(lambda _info: stop.is_set())
        solution = solver.solve()
    except Exception as err:  # noqa: BLE001 - Clarabel raises plain Exception
        if str(err).startswith("Bad settings"):  # values only the solver checks
            raise ValueError(f"invalid Clarabel settings: {err}") from err
        raise
    except BaseException as err:
        if type(err).__name__ != "PanicException":  # KeyboardInterrupt, SystemExit, ...
            raise
        return _panicked(err, n, m, raise_on_error)
    if stop is not None and stop.is_set():
        raise Stopped("the batch was stopped")

    x = as_solution_vector(solution.x, n)
    y = as_solution_vector(solution.z, m)
    s = as_solution_vector(solution.s, m)
    if rows:
        y, s = rows.from_solver(y, s)

    native = str(solution.status)
    status = STATUS.get(native, FAILED)
    info = {
        "obj_val": solution.obj_val,
        "obj_val_dual": solution.obj_val_dual,
        "iterations": solution.iterations,
        "r_prim": solution.r_prim,
        "r_dual": solution.r_dual,
        **scs_style_info(
            status,
            solution.iterations,
            solution.obj_val,
            solution.obj_val_dual,
            solution.solve_time,
            setup_time,
        ),
    }
    return finish(NAME, native, status, x, y, s, info, raise_on_error,
                  wording=f"Solver clarabel returned status {native}")


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
    """Solve the cone program with Clarabel.

    Parameters
    ----------
    A, b, c, cones, P
        Problem data (see :func:`diffqcp_np.solvers.solve_cone_program`); not modified.
    warm_start : tuple, optional
        Ignored: Clarabel has no warm start.
    verbose : bool
        Clarabel's ``verbose``.
    raise_on_error : bool
        Raise :class:`~diffqcp_np.solvers.base.SolverError` on a status without a solution.
    **kwargs
        Attributes of ``clarabel.DefaultSettings`` (``tol_gap_abs``, ``max_iter``, ...).

    Returns
    -------
    SolverResult

    Raises
    ------
    ValueError
        On a keyword that is not a Clarabel setting, or a value it does not accept.
    """
    m, n = A.shape
    settings = _settings(verbose, kwargs)
    solver_cones, blocks = _cones_and_rows(cones)
    rows = RowTransform(m, blocks) if blocks else None
    A_solver, b_solver = rows.to_solver(A, b) if rows else (A, np.array(b, dtype=np.float64))
    P_solver = sp.csc_matrix((n, n)) if P is None else upper_triangle(P)
    return _run(P_solver, np.array(c, dtype=np.float64), A_solver, b_solver, solver_cones,
                settings, rows, raise_on_error)


def prepare(cones: ConeSpec, patterns: SharedPatterns, verbose: bool = False,
            **kwargs: Any) -> PreparedSolve:
    """:func:`solve` set up once for a same-structure batch (see :mod:`.prepared`).

    The settings and cones are built once, and each problem reaches Clarabel as lists
    on the shared index lists (rows changed as :func:`solve` does, where it does).

    Raises
    ------
    ValueError
        As :func:`solve` does, on a bad setting.
    """
    settings = _settings(verbose, kwargs)
    solver_cones, blocks = _cones_and_rows(cones)
    m, n = patterns.shape
    rows = RowTransform(m, blocks) if blocks else None
    if rows is None:
        A_indices, A_indptr = patterns.A_indices, patterns.A_indptr
    else:  # T A by a gather on the shared pattern (a sparse product costs ~10x more)
        A_indices, A_indptr, source, factor = rows.gather(patterns.A_indices,
                                                          patterns.A_indptr, (m, n))
    A_index = (A_indices.tolist(), A_indptr.tolist())
    P_index = (None if patterns.P_indices is None
               else (patterns.P_indices.tolist(), patterns.P_indptr.tolist()))
    no_P = _ListCSC([], [], [0] * (n + 1), (n, n))

    def P_lists(values: Optional[np.ndarray]) -> _ListCSC:
        if values is None:
            return no_P
        data, indices, indptr = patterns.P_arrays(values)
        if data is values:
            return _ListCSC(values.tolist(), *P_index, (n, n))
        return _ListCSC(data.tolist(), indices.tolist(), indptr.tolist(), (n, n))

    def A_lists(values: np.ndarray) -> _ListCSC:
        if rows is None:
            return _ListCSC(values.tolist(), *A_index, (m, n))
        data = factor * values[source]
        if data.all():
            return _ListCSC(data.tolist(), *A_index, (m, n))
        # SciPy's product leaves out the entries that come out zero: so do we
        kept = drop_zeros(data, A_indices, A_indptr)
        return _ListCSC(*(array.tolist() for array in kept), (m, n))

    def solve_values(A, b, c, P, warm_start, raise_on_error) -> SolverResult:
        b_solver = b.tolist() if rows is None else rows.vector_to_solver(b)
        return _run(P_lists(P), c.tolist(), A_lists(A), b_solver, solver_cones, settings,
                    rows, raise_on_error)

    return solve_values
