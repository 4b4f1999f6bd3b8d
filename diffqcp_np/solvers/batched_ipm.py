"""Forward solver: a batched dense interior-point method for small problems ("IPM").

For the small same-structure batches that training loops send (cvxpylayers: one cone
dict, one pattern of ``A`` and ``P``, new values every step), a per-problem solver call
costs far more in setup and Python than in arithmetic. :class:`BatchedIPM` solves the
whole batch in compiled kernels (:mod:`._batched_ipm_numba`): no Python and no solver
object per problem, the GIL released, blocks of problems on threads. What depends only on
the structure (cone layout, the row view of ``A``, the columns each second-order cone
touches, the dense factor's size) is built once, in :meth:`BatchedIPM.__init__`.

The methods. Strictly convex QPs (``P`` positive definite) with zero and orthant cones
only go first to a dual active-set method (Goldfarb-Idnani, :mod:`._active_set_numba`):
O(n²) per active constraint, and an exactly complementary solution (``y = 0`` off the
active set, ``s = 0`` on it); it is kept when it passes the feasibility tolerance
(``info["method"] == "active_set"``, ``info["iter"]`` its additions and drops). Every
other problem, and any the active-set method gives up on (infeasible members, dependent
constraints it cannot resolve), goes to the interior-point method
(``"interior_point"``, :mod:`._batched_ipm_numba`): Clarabel's homogeneous embedding for
quadratic objectives (infeasible and unbounded problems end with certificates),
Nesterov-Todd scaling in a form that stays accurate where a second-order cone's ``s``
and ``y`` both end on its boundary, Mehrotra's predictor-corrector, and a dense
regularised LDLᵀ of the reduced Newton system (refined iteratively where a pivot is
near the regularisation). Together they cover zero cones, nonnegative orthants and
second-order cones, with or without ``P``. The interior-point method stops at
tolerances (1e-10 by default) tighter than the per-problem solvers' defaults, then
polishes its solution by Newton steps on the KKT conditions at the faces it ended on
(``info["polish_steps"]``, at most 2, each kept only if it lowers the residual): an
interior-point method's iterates leave a cone's ``s`` and ``y`` out of line by ~√μ, so
that without it the solutions of second-order cone problems are only as accurate as
√tol; polished, ``y`` and ``s`` are complementary on their faces and the KKT residual
is at the rounding level, which is what the derivative needs. ``active_set=False``
sends every problem to the interior-point method.

Warm starts (interior-point method only: the active-set method's work is set by the
number of active constraints): a problem's ``(x, y, s)`` is moved ``warm_start_shift``
inside the cones and the embedding starts from it with ``τ = 1``; without one the
starting point is Clarabel's (a least-squares solve with identity scaling, shifted into
the cones).

``info`` per problem: ``status`` (SCS-style, e.g. ``"Solved"``), ``status_val``,
``iter``, ``pobj``, ``dobj``, ``solve_time`` (ms) and ``solveTime`` (s): the wall time
of the problem's block shared out in proportion to iterations, ``setup_time`` (0:
the setup is per structure), ``r_prim``, ``r_dual``, ``gap``, ``method``,
``polish_steps`` (interior-point method), and ``solver_status``
(``"Solved"``, ``"AlmostSolved"``, ``"PrimalInfeasible"``, ``"DualInfeasible"``,
``"AlmostPrimalInfeasible"``, ``"AlmostDualInfeasible"``, ``"MaxIterations"``,
``"NumericalError"``, ``"InsufficientProgress"``), ``canonical_status``, ``solver`` and,
without a solution, ``error_message`` (``"Solver ipm returned status PrimalInfeasible.
..."``, the :class:`SolverError` text).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import scipy.sparse as sp

from diffqcp_np.cones.spec import ConeSpec
from diffqcp_np.solvers import _batched_ipm_numba as kernels
from diffqcp_np.solvers.base import (
    FAILED,
    INFEASIBLE,
    INFEASIBLE_INACCURATE,
    OPTIMAL,
    OPTIMAL_INACCURATE,
    UNBOUNDED,
    UNBOUNDED_INACCURATE,
    SolverResult,
    finish,
    scs_style_info,
)
from diffqcp_np.solvers.prepared import PreparedSolve, SharedPatterns

NAME = "IPM"

#: Kernel status code: (native name, canonical status).
STATUS = {
    kernels.SOLVED: ("Solved", OPTIMAL),
    kernels.ALMOST_SOLVED: ("AlmostSolved", OPTIMAL_INACCURATE),
    kernels.PRIMAL_INFEASIBLE: ("PrimalInfeasible", INFEASIBLE),
    kernels.DUAL_INFEASIBLE: ("DualInfeasible", UNBOUNDED),
    kernels.ALMOST_PRIMAL_INFEASIBLE: ("AlmostPrimalInfeasible", INFEASIBLE_INACCURATE),
    kernels.ALMOST_DUAL_INFEASIBLE: ("AlmostDualInfeasible", UNBOUNDED_INACCURATE),
    kernels.MAX_ITERATIONS: ("MaxIterations", FAILED),
    kernels.NUMERICAL_ERROR: ("NumericalError", FAILED),
    kernels.INSUFFICIENT_PROGRESS: ("InsufficientProgress", FAILED),
    kernels.UNSOLVED: ("Unsolved", FAILED),
}

#: Settings and their defaults (Clarabel's names where Clarabel has the setting);
#: ``active_set``: try the dual active-set method on strictly convex polyhedral QPs.
DEFAULT_SETTINGS: dict[str, float] = {
    "tol_feas": 1e-10,
    "tol_gap_abs": 1e-10,
    "tol_gap_rel": 1e-10,
    "tol_infeas_abs": 1e-10,
    "tol_infeas_rel": 1e-9,
    "reduced_tol_feas": 1e-6,
    "reduced_tol_gap_abs": 1e-6,
    "reduced_tol_gap_rel": 1e-6,
    "reduced_tol_infeas": 1e-6,
    "max_iter": 100,
    "static_regularization_constant": 1e-9,
    "max_step_fraction": 0.99,
    "warm_start_shift": 1e-2,
    "iterative_refinement_max_iter": 6,
    "min_terminate_step_length": 1e-8,
    "active_set": 1,
}

_OPTION_INDEX = {
    "tol_feas": kernels.TOL_FEAS,
    "tol_gap_abs": kernels.TOL_GAP_ABS,
    "tol_gap_rel": kernels.TOL_GAP_REL,
    "tol_infeas_abs": kernels.TOL_INFEAS_ABS,
    "tol_infeas_rel": kernels.TOL_INFEAS_REL,
    "reduced_tol_feas": kernels.REDUCED_TOL_FEAS,
    "reduced_tol_gap_abs": kernels.REDUCED_TOL_GAP_ABS,
    "reduced_tol_gap_rel": kernels.REDUCED_TOL_GAP_REL,
    "reduced_tol_infeas": kernels.REDUCED_TOL_INFEAS,
    "max_iter": kernels.MAX_ITER,
    "static_regularization_constant": kernels.STATIC_REG,
    "max_step_fraction": kernels.MAX_STEP_FRACTION,
    "warm_start_shift": kernels.WARM_SHIFT,
    "iterative_refinement_max_iter": kernels.MAX_REFINE,
    "min_terminate_step_length": kernels.MIN_STEP,
    "active_set": kernels.ACTIVE_SET,
}

#: Kernel method code: the ``info["method"]`` it is reported as.
METHODS = {kernels.INTERIOR_POINT: "interior_point", kernels.ACTIVE_SET_METHOD: "active_set"}

#: Canonical statuses, best first: a member that the interior-point method leaves short
#: of ``optimal`` is solved again by the fallback solver, whose result replaces it where
#: its status ranks better.
STATUS_RANK = {OPTIMAL: 0, OPTIMAL_INACCURATE: 1, INFEASIBLE: 2, UNBOUNDED: 2,
               INFEASIBLE_INACCURATE: 3, UNBOUNDED_INACCURATE: 3, FAILED: 4}

#: Kernel codes of the members a fallback solver takes again (every status but Solved).
RETRY_CODES = [code for code, (_, status) in STATUS.items() if status != OPTIMAL]

#: Settings handed on to the fallback solver (Clarabel has them under the same names).
FALLBACK_SETTINGS = ("tol_feas", "tol_gap_abs", "tol_gap_rel", "tol_infeas_abs",
                     "tol_infeas_rel", "reduced_tol_feas", "reduced_tol_gap_abs",
                     "reduced_tol_gap_rel", "max_iter", "static_regularization_constant",
                     "max_step_fraction", "iterative_refinement_max_iter",
                     "min_terminate_step_length")

#: Problems per block (one kernel call; the unit of work of a thread).
BLOCK_SIZE = 64

#: Largest ``n + m`` for which ``solve_method="auto"`` picks this solver: its factor is
#: dense, of side up to ``n + m``.
AUTO_MAX_DIM = 200


def unsupported_cones(cones: ConeSpec) -> list[str]:
    """The cone kinds of ``cones`` this solver does not cover (empty if it covers them)."""
    out = []
    if cones.psd:
        out.append("PSD ('s')")
    if cones.exp or cones.exp_dual:
        out.append("exponential ('ep', 'ed')")
    if cones.power:
        out.append("power ('p')")
    return out


def applies(cones: ConeSpec, shape: tuple[int, int], solver_kwargs: dict) -> bool:
    """Whether ``solve_method="auto"`` picks this solver: zero and orthant cones only,
    ``n + m`` at most :data:`AUTO_MAX_DIM`, and every keyword one of its settings (or
    ``verbose``).

    Second-order cones are left to the per-problem solvers (``solve_method="IPM"``
    takes them).
    """
    m, n = shape
    return (not unsupported_cones(cones) and not cones.soc and 0 < n + m <= AUTO_MAX_DIM
            and set(solver_kwargs) <= set(DEFAULT_SETTINGS) | {"verbose"})


def settings_array(verbose: bool = False, **kwargs: Any) -> np.ndarray:
    """The kernel's settings from keyword arguments (see :data:`DEFAULT_SETTINGS`).

    Raises
    ------
    ValueError
        On an unknown setting or a value that is not a positive number (``max_iter``
        and ``iterative_refinement_max_iter``: a non-negative integer;
        ``max_step_fraction`` in (0, 1)).
    """
    del verbose  # the kernels print nothing
    settings = dict(DEFAULT_SETTINGS)
    for key, value in kwargs.items():
        if key not in settings:
            raise ValueError(
                f"unknown {NAME} setting {key!r}; the accepted settings are "
                f"{sorted(DEFAULT_SETTINGS)} (and verbose)"
            )
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"invalid {NAME} setting {key}={value!r}: not a number") from None
        if key == "active_set":
            if number not in (0.0, 1.0):
                raise ValueError(f"invalid {NAME} setting {key}={value!r}: expected a bool")
        elif key in ("max_iter", "iterative_refinement_max_iter"):
            if number != int(number) or number < 0:
                raise ValueError(f"invalid {NAME} setting {key}={value!r}: expected a "
                                 "non-negative integer")
        elif key == "max_step_fraction":
            if not 0.0 < number < 1.0:
                raise ValueError(f"invalid {NAME} setting {key}={value!r}: expected a "
                                 "number in (0, 1)")
        elif not (number > 0.0 and np.isfinite(number)):
            raise ValueError(f"invalid {NAME} setting {key}={value!r}: expected a "
                             "positive number")
        settings[key] = number
    opts = np.empty(kernels.N_OPTS)
    for key, index in _OPTION_INDEX.items():
        opts[index] = settings[key]
    return opts


@dataclass
class BatchedResult:
    """A batch's solutions as stacked arrays (one row per problem).

    Attributes
    ----------
    x, y, s : ndarray
        ``(B, n)``, ``(B, m)``, ``(B, m)``: solutions, or certificates for infeasible
        (``y``, normalised so that ``b'y = −1``) and unbounded (``x``, ``s``, with
        ``c'x = −1``) problems, NaN elsewhere.
    codes : ndarray of int64
        Kernel status codes (see :data:`STATUS`).
    iterations : ndarray of int64
    figures : ndarray
        ``(B, 5)``: primal and dual objectives, primal and dual residuals, gap.
    solve_time : ndarray
        Seconds per problem (each block's wall time shared out by iterations).
    """

    x: np.ndarray
    y: np.ndarray
    s: np.ndarray
    codes: np.ndarray
    iterations: np.ndarray
    figures: np.ndarray
    solve_time: np.ndarray
    methods: np.ndarray
    replaced: dict[int, SolverResult] = field(default_factory=dict)

    def status(self, k: int) -> str:
        """Canonical status of problem ``k``."""
        if k in self.replaced:
            return self.replaced[k].status
        return STATUS[int(self.codes[k])][1]

    def info(self, k: int) -> dict[str, Any]:
        """Problem ``k``'s ``info`` dict (see the module docstring)."""
        if k in self.replaced:
            return self.replaced[k].info
        return _info(int(self.codes[k]), int(self.iterations[k]), self.figures[k].tolist(),
                     float(self.solve_time[k]), int(self.methods[k]))

    def optimal(self) -> np.ndarray:
        """Per member: solved to optimality by the method (nothing to warn about or
        raise, not replaced), so that its :class:`SolverResult` is its rows of ``x``,
        ``y``, ``s``, status ``"optimal"`` and :meth:`optimal_info`."""
        out = self.codes == kernels.SOLVED
        if self.replaced:
            out[list(self.replaced)] = False
        return out

    def optimal_info(self, k: int) -> dict[str, Any]:
        """The ``info`` dict of member ``k`` of :meth:`optimal`, as :meth:`result` gives
        it."""
        info = self.info(k)
        info.update(canonical_status=OPTIMAL, solver=NAME,
                    solver_status=STATUS[kernels.SOLVED][0])
        return info

    def result(self, k: int, raise_on_error: bool = False) -> SolverResult:
        """Problem ``k`` as a :class:`SolverResult` (views of its rows), through
        :func:`~diffqcp_np.solvers.base.finish`: an inaccurate solution warns, a status
        without a solution puts the :class:`SolverError` text in ``info["error_message"]``
        (and raises it if ``raise_on_error``)."""
        if k in self.replaced:
            return self.replaced[k]
        native, status = STATUS[int(self.codes[k])]
        info = self.info(k)
        return finish(NAME, native, status, self.x[k], self.y[k], self.s[k], info,
                      raise_on_error,
                      wording=f"Solver {NAME.lower()} returned status {native}")


def _info(code: int, iterations: int, figures: list, solve_time: float,
          method: int) -> dict[str, Any]:
    """A member's ``info`` dict from its kernel status code, iterations, figures
    ``(pobj, dobj, r_prim, r_dual, gap, polish steps)``, seconds and method code."""
    pobj, dobj, r_prim, r_dual, gap, polish = figures
    info = scs_style_info(STATUS[code][1], iterations, pobj, dobj, solve_time, 0.0)
    info.update(r_prim=r_prim, r_dual=r_dual, gap=gap, method=METHODS[method])
    if info["method"] == "interior_point":
        info["polish_steps"] = int(polish) if polish == polish else 0
    return info


def _csr_view(indices: np.ndarray, indptr: np.ndarray, m: int):
    """Per row of a CSC pattern: its entries' columns and positions (row_ptr, col, src)."""
    nnz = indices.size
    cols = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    order = np.lexsort((cols, indices))  # by row, then column
    row_ptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(indices, minlength=m), out=row_ptr[1:])
    return row_ptr, cols[order].astype(np.int64), order.astype(np.int64) if nnz else \
        np.zeros(0, np.int64)


class BatchedIPM:
    """The batched interior-point method, set up for one structure and one set of settings.

    Parameters
    ----------
    cones : ConeSpec
        Zero, nonnegative and second-order cones only.
    patterns : SharedPatterns
        The patterns of ``A`` and of ``P``'s upper triangle.
    fallback : str, optional
        A per-problem solver (``"Clarabel"``) that solves again every member this one
        leaves short of ``optimal`` (numerical trouble, the iteration limit, an
        inaccurate solution, a certificate), with the settings it shares with this one
        (``tol_*``, ``max_iter``, ...); its result replaces this one's where its status
        ranks better (:data:`STATUS_RANK`: an optimal solution always does), and then
        the member's ``info`` is that solver's. So a batch never ends worse than the
        fallback solver alone would have left it.
    **settings
        See :data:`DEFAULT_SETTINGS` (and ``verbose``, accepted and ignored).

    Raises
    ------
    ValueError
        On cones it does not cover, or a bad setting.
    """

    def __init__(self, cones: ConeSpec, patterns: SharedPatterns,
                 fallback: Optional[str] = None, **settings: Any) -> None:
        missing = unsupported_cones(cones)
        if missing:
            raise ValueError(f"solver {NAME} does not support {', '.join(missing)} cones; "
                             'use solve_method="Clarabel" or solve_method="SCS"')
        self.opts = settings_array(**settings)
        self.fallback = fallback
        self._fallback_settings = {k: v for k, v in settings.items()
                                   if k in FALLBACK_SETTINGS}
        self._fallback_solve: Optional[PreparedSolve] = None
        self.cones = cones
        self.patterns = patterns
        m, n = patterns.shape
        self.shape = (m, n)
        self.A_indptr = np.asarray(patterns.A_indptr, dtype=np.int64)
        self.A_indices = np.asarray(patterns.A_indices, dtype=np.int64)
        self.row_ptr, self.row_col, self.row_src = _csr_view(self.A_indices, self.A_indptr, m)
        if patterns.P_indices is None:
            self.P_row = self.P_col = np.zeros(0, dtype=np.int64)
        else:
            self.P_row = np.asarray(patterns.P_indices, dtype=np.int64)
            self.P_col = np.repeat(np.arange(n, dtype=np.int64), np.diff(patterns.P_indptr))
        soc = np.asarray(cones.soc, dtype=np.int64)
        self.soc_dim = soc
        self.soc_start = (cones.zero + cones.nonneg + np.cumsum(soc) - soc).astype(np.int64)
        self._soc_columns()
        dims = np.zeros(kernels.N_DIMS, dtype=np.int64)
        dims[[kernels.D_N, kernels.D_M, kernels.D_MZ, kernels.D_ML, kernels.D_NSOC,
              kernels.D_MAX_SOC_DIM, kernels.D_MAX_SOC_COLS]] = (
            n, m, cones.zero, cones.nonneg, soc.size, self.max_soc_dim, self.max_soc_cols)
        self.structure = (self.A_indptr, self.A_indices, self.row_ptr, self.row_col,
                          self.row_src, self.P_row, self.P_col, self.soc_start, self.soc_dim,
                          self.soc_col_ptr, self.soc_cols, self.row_loc, dims)

    def _soc_columns(self) -> None:
        """The sorted columns each SOC's rows touch, and each entry's place among them."""
        self.row_loc = np.zeros(self.row_col.size, dtype=np.int64)
        col_ptr, cols = [0], []
        for lo, d in zip(self.soc_start.tolist(), self.soc_dim.tolist()):
            span = slice(self.row_ptr[lo], self.row_ptr[lo + d])
            touched = np.unique(self.row_col[span])
            self.row_loc[span] = np.searchsorted(touched, self.row_col[span])
            cols.append(touched)
            col_ptr.append(col_ptr[-1] + touched.size)
        self.soc_col_ptr = np.asarray(col_ptr, dtype=np.int64)
        self.soc_cols = (np.concatenate(cols).astype(np.int64) if cols
                         else np.zeros(0, dtype=np.int64))
        self.max_soc_cols = int(np.diff(self.soc_col_ptr).max()) if cols else 0
        self.max_soc_dim = int(self.soc_dim.max()) if self.soc_dim.size else 0

    def _run_block(self, lo: int, hi: int, data: tuple, warm: tuple, out: BatchedResult) -> None:
        A, b, c, P = data
        has_warm, wx, wy, ws = warm
        start = time.perf_counter()
        kernels.solve_block(
            self.structure, A[lo:hi], b[lo:hi], c[lo:hi], P[lo:hi], self.opts,
            has_warm[lo:hi], wx[lo:hi],
            wy[lo:hi], ws[lo:hi], out.x[lo:hi], out.y[lo:hi], out.s[lo:hi],
            out.codes[lo:hi], out.iterations[lo:hi], out.figures[lo:hi], out.methods[lo:hi])
        elapsed = time.perf_counter() - start
        its = out.iterations[lo:hi]
        total = its.sum()
        out.solve_time[lo:hi] = (elapsed * its / total if total
                                 else elapsed / max(hi - lo, 1))

    def solve(self, A: np.ndarray, b: np.ndarray, c: np.ndarray, P: Optional[np.ndarray],
              warm_starts: Optional[list] = None, n_jobs: int = 1,
              progress: Optional[Callable[[int], None]] = None) -> BatchedResult:
        """Solve a batch given as values on the shared patterns.

        Parameters
        ----------
        A : ndarray (B, nnzA)
            Values of each ``A`` on the shared pattern.
        b, c : ndarray (B, m), (B, n)
        P : ndarray (B, nnzP) or None
            Values of each ``P``'s upper triangle on the shared pattern.
        warm_starts : list of (x, y, s) or None, optional
            Per problem (entries may be None), already checked.
        n_jobs : int
            Threads (blocks of :data:`BLOCK_SIZE` problems each).
        progress : callable, optional
            ``progress(count)`` after each block, in the calling thread.

        Returns
        -------
        BatchedResult
        """
        m, n = self.shape
        count = A.shape[0]
        data = (np.ascontiguousarray(A, dtype=np.float64),
                np.ascontiguousarray(b, dtype=np.float64),
                np.ascontiguousarray(c, dtype=np.float64),
                np.zeros((count, 0)) if P is None
                else np.ascontiguousarray(P, dtype=np.float64))
        warm = self._warm_arrays(warm_starts, count)
        out = BatchedResult(np.empty((count, n)), np.empty((count, m)), np.empty((count, m)),
                            np.zeros(count, dtype=np.int64), np.zeros(count, dtype=np.int64),
                            np.empty((count, kernels.N_FIGURES)), np.zeros(count),
                            np.zeros(count, dtype=np.int64))
        blocks = [(lo, min(lo + BLOCK_SIZE, count)) for lo in range(0, count, BLOCK_SIZE)]
        if n_jobs <= 1 or len(blocks) <= 1:
            for lo, hi in blocks:
                self._run_block(lo, hi, data, warm, out)
                if progress is not None:
                    progress(hi - lo)
        else:
            with ThreadPoolExecutor(max_workers=min(n_jobs, len(blocks))) as pool:
                futures = [pool.submit(self._run_block, lo, hi, data, warm, out)
                           for lo, hi in blocks]
                for future, (lo, hi) in zip(futures, blocks):
                    future.result()
                    if progress is not None:
                        progress(hi - lo)
        if self.fallback is not None:
            self._solve_failures_again(data, warm_starts, out)
        return out

    def _solve_failures_again(self, data: tuple, warm_starts: Optional[list],
                              out: BatchedResult) -> None:
        failed = np.flatnonzero(np.isin(out.codes, RETRY_CODES))
        if not failed.size:
            return
        if self._fallback_solve is None:
            from diffqcp_np.solvers.registry import solver_module

            module = solver_module(self.fallback)
            self._fallback_solve = module.prepare(self.cones, self.patterns,
                                                  **self._fallback_settings)
        A, b, c, P = data
        no_P = self.patterns.P_indices is None
        for k in failed.tolist():
            warm = None if warm_starts is None else warm_starts[k]
            again = self._fallback_solve(A[k], b[k], c[k], None if no_P else P[k], warm, False)
            if STATUS_RANK[again.status] < STATUS_RANK[out.status(k)]:
                out.replaced[k] = again

    def _warm_arrays(self, warm_starts: Optional[list], count: int) -> tuple:
        m, n = self.shape
        has = np.zeros(count, dtype=np.bool_)
        if warm_starts is None or all(w is None for w in warm_starts):
            empty_n, empty_m = np.zeros((count, n)), np.zeros((count, m))
            return has, empty_n, empty_m, empty_m
        wx, wy, ws = np.zeros((count, n)), np.zeros((count, m)), np.zeros((count, m))
        for k, warm in enumerate(warm_starts):
            if warm is not None:
                has[k] = True
                wx[k], wy[k], ws[k] = warm
        return has, wx, wy, ws


def solve(A: sp.csc_matrix, b: np.ndarray, c: np.ndarray, cones: ConeSpec,
          P: Optional[sp.csc_matrix] = None, warm_start: Optional[tuple] = None,
          verbose: bool = False, raise_on_error: bool = True, **kwargs: Any) -> SolverResult:
    """Solve one cone program with the dense interior-point method (a batch of one).

    Parameters
    ----------
    A, b, c, cones, P
        Problem data (see :func:`diffqcp_np.solvers.solve_cone_program`); not modified.
        Zero, nonnegative and second-order cones only. The dense factor has side
        ``n + (zero-cone rows)``: meant for small problems.
    warm_start : tuple, optional
        ``(x, y, s)`` to start from.
    verbose : bool
        Ignored (the solver prints nothing).
    raise_on_error : bool
        Raise :class:`SolverError` on a status without a solution.
    **kwargs
        Settings (see :data:`DEFAULT_SETTINGS`).

    Returns
    -------
    SolverResult
    """
    m, n = A.shape
    A = sp.csc_matrix(A)
    A.sort_indices()
    upper = None
    if P is not None:
        upper = sp.triu(sp.csc_matrix(P), format="csc")
        upper.sort_indices()
    patterns = SharedPatterns((m, n), A.indices, A.indptr,
                              None if upper is None else upper.indices,
                              None if upper is None else upper.indptr)
    solver = BatchedIPM(cones, patterns, verbose=verbose, **kwargs)
    out = solver.solve(A.data[None], np.asarray(b, dtype=np.float64)[None],
                       np.asarray(c, dtype=np.float64)[None],
                       None if upper is None else upper.data[None],
                       None if warm_start is None else [warm_start])
    return out.result(0, raise_on_error)


def prepare(cones: ConeSpec, patterns: SharedPatterns, verbose: bool = False,
            **kwargs: Any) -> PreparedSolve:
    """:func:`solve` set up once for a same-structure batch (see :mod:`.prepared`)."""
    solver = BatchedIPM(cones, patterns, verbose=verbose, **kwargs)

    def solve_values(A, b, c, P, warm_start, raise_on_error) -> SolverResult:
        out = solver.solve(A[None], b[None], c[None], None if P is None else P[None],
                           None if warm_start is None else [warm_start])
        return out.result(0, raise_on_error)

    return solve_values
