"""Batches of cone programs: solve them, and differentiate their solution maps, in parallel.

``solve_and_derivative_batch`` and ``solve_only_batch`` have diffcp 1.1.9's signatures
and return values (keyword names included: cvxpylayers passes ``As=``, ``bs=``, ``cs=``,
``cone_dicts=``), plus keyword-only options:

Back ends
    ``backend="threads"`` (the default), ``"processes"`` (a ``ProcessPoolExecutor``
    started with ``forkserver`` or ``spawn``, created on first use and reused),
    ``"serial"``, or ``executor=`` any ``concurrent.futures.Executor``, e.g. Dask's
    ``distributed.Client.get_executor()``. ``n_jobs_* = -1`` means all cores, ``1`` runs
    serially in the calling thread. Problems are sent in chunks (``chunksize``, default
    about four tasks per worker); BLAS is pinned to one thread per worker. Results always
    come back in input order. The solvers (SCS, Clarabel), SuperLU and the Numba kernels
    release the GIL; the per-problem Python work around them holds it, which for small
    problems can make ``"processes"`` the faster back end.

Where the backward pass runs
    With the serial and thread back ends each problem's derivative is set up in the
    forward pass, where its solution is found (``K`` is factored once), and ``D_batch``
    and ``DT_batch`` reuse it, as single ``solve_and_derivative`` calls do.
    With processes and executors a SuperLU factorisation cannot travel between
    processes, so nothing is factored in the forward pass: the parent keeps each
    problem's validated data and solution, and every ``D_batch``/``DT_batch`` call
    sends self-contained tasks (data, solution, perturbations) to the same executor,
    whose workers set up the derivative, apply it and return the result. That is one
    factorisation per problem per call: the same cost as factoring in the forward pass
    when, as in training loops, each batch is differentiated once, and the backward
    pass is spread over the workers (over several machines with Dask). The exception
    is the batched dense derivative of small same-structure batches (below): it is set
    up in this process after the forward pass, whatever the back end, since it costs
    less than sending the problems away.

Refinement
    In the exact modes every solution is refined before it is differentiated
    (``refine=True``, the default, as in ``solve_and_derivative``; see
    :mod:`~diffqcp_np.derivative.solution_refinement`): with the serial and thread back
    ends where the derivative is set up, in the forward pass; with processes and
    executors in a pass of its own after the forward pass (one more factorisation per
    problem, in the workers); for the batched dense derivative in compiled passes over
    the whole batch. ``xs``, ``ys``, ``ss`` are the refined solutions and
    ``info["refinement"]`` each problem's report; one
    :class:`InaccurateDerivativeWarning` names the problems whose solutions do not
    decide every face.

Failures
    A problem without a solution (infeasible, unbounded, solver failure) raises
    :class:`SolverError` naming its index (``"problem 3: ..."``). With
    ``raise_on_error=False`` its ``x``, ``y``, ``s`` are NaN arrays of the right sizes,
    ``D_batch`` gives it NaN ``dx``, ``dy``, ``ds`` and ``DT_batch`` NaN ``db``, ``dc``
    and a ``dA`` (``dP``) with NaN values on A's (P's) pattern, while every other
    result is kept. ``return_info=True`` adds the per-problem solver ``info`` dicts
    (``info["status"]``, ``info["iter"]``, ...) to the returned tuple. Invalid input
    raises ``ValueError`` naming the problem and argument; an exception raised while
    processing a problem carries the attribute ``diffqcp_problem_index``. A worker
    process that dies (signal, ``os._exit``, out of memory) raises ``RuntimeError``
    naming the unfinished problems, promptly; with ``raise_on_error=False`` and
    ``backend="processes"`` the unfinished problems run again on a new pool (one at a
    time once a second worker dies), and only a problem whose worker dies while it runs
    alone gets NaN results (forward: ``info["solver_status"]`` is ``"worker process
    died"``; ``D_batch``/``DT_batch``: a ``RuntimeWarning`` naming it), every other
    problem its own. A pool whose worker died, even while idle, is replaced at its next
    use. Ctrl-C (``KeyboardInterrupt``) stops a batch promptly on every back end: see
    :mod:`diffqcp_np.batch.runner`.

Same-structure batches
    When every ``A`` shares one canonical CSC pattern, every ``P`` another (or all are
    None) and every cone dict is equal (the cvxpylayers case), the cone dict is parsed
    and the patterns analysed once (:mod:`diffqcp_np.batch.structure`): only the values
    are validated (for the whole batch at once), the forward solver is set up once
    (:class:`~diffqcp_np.solvers.BatchSolver`: its cones, settings and index arrays; the
    solutions are exactly those of single solves) and takes each problem as values (sent
    to processes as stacked arrays, a few per task), and the derivative system is filled
    through precomputed index maps instead of sparse-matrix algebra. When, in addition,
    the derivative system is small (``N = n + m ≤ 200``) and the mode is ``direct`` or
    ``dense``, the derivatives are set up for the whole batch at once after the forward
    pass
    (:mod:`diffqcp_np.batch.dense`: one cone Jacobian call per block of problems, dense
    systems factored by LAPACK in a compiled loop, one compiled pass per
    ``D_batch``/``DT_batch`` call); a member whose system is singular falls back to its
    own (least-squares) derivative, and a product of it that does not exist warns
    (``NonDifferentiableWarning``) naming the member.
    ``D_batch.dense_batch`` (and ``DT_batch.dense_batch``) is that batched derivative,
    or None on the other paths.

Inputs are never modified.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from .._validation import ProblemData, check_problem
from .._warnings import warn_at_caller
from ..backend import device_requested
from ..cones.spec import as_cone_spec
from ..derivative import EXACT_MODES, InaccurateDerivativeWarning, QuadraticTerm, SolutionDerivative
from ..derivative.convexity import check_positive_semidefinite
from ..derivative.solution_map import _check_unused_kwargs
from ..derivative.solution_refinement import RefinementReport, ResidualMap, refine_solution
from ..pipeline import (
    DEFAULT_MODE,
    LPGD_OPTIONS,
    SMOOTHING,
    check_mode,
    derivative_options,
    forward_solve,
    make_derivative,
)
from ..solvers import (
    BatchSolver,
    SolverError,
    SolverResult,
    check_warm_start,
    resolve_solve_method,
)
from ..solvers.base import FAILED, OPTIMAL, SCS_STYLE_STATUS
from ..solvers.batched_ipm import BatchedIPM
from . import dense as dense_batch
from .dense import DenseBatchDerivative
from .runner import ProgressLike, Runner, describe, make_runner, tag_exception
from .structure import BatchStructure

#: The batch functions' default forward solver: the batched interior-point method for
#: the small same-structure batches it covers, SCS otherwise (see ``resolve_solve_method``).
BATCH_DEFAULT_SOLVER = "auto"

__all__ = ["solve_and_derivative_batch", "solve_only_batch"]


# -- settings and work items ----------------------------------------------------------------
@dataclass(frozen=True)
class _Settings:
    """What every problem of a batch is solved and differentiated with."""

    solve_method: str
    solver_kwargs: dict
    mode: str | None = None
    derivative_kwargs: dict = field(default_factory=dict)
    structure: BatchStructure | None = None
    solver: BatchSolver | None = None  # the forward solver of a same-structure batch
    batched: BatchedIPM | None = None  # or its batched interior-point method
    refine: bool = False  # refine each solution before differentiating (exact modes)


@dataclass
class _Problem:
    """One validated problem (a forward work item)."""

    index: int
    data: ProblemData
    quadratic: QuadraticTerm
    warm_start: Any = None


class _Problems(Sequence):
    """The batch's forward work items (:class:`_Problem`), each built when first read
    (the batched paths read the stacked values and leave most of them unbuilt).

    Parameters
    ----------
    validated : sequence
        ``(ProblemData, QuadraticTerm)`` per problem.
    warm_starts : list
        Per problem: its warm start or None (checked ones, once the batch's forward
        solver has checked them).
    """

    def __init__(self, validated: Sequence, warm_starts: list) -> None:
        self._validated, self.warm_starts = validated, warm_starts
        self._built: dict[int, _Problem] = {}

    def __len__(self) -> int:
        return len(self._validated)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = range(len(self))[i]  # an int in range (IndexError otherwise)
        problem = self._built.get(i)
        if problem is None:
            data, quadratic = self._validated[i]
            problem = self._built[i] = _Problem(i, data, quadratic, self.warm_starts[i])
        return problem


@dataclass
class _Values:
    """One problem of a same-structure batch as values (a forward work item sent to
    other processes: see :class:`~diffqcp_np.solvers.BatchSolver`)."""

    index: int
    A: np.ndarray
    b: np.ndarray
    c: np.ndarray
    P: np.ndarray | None  # the upper triangle of the symmetric P, on the shared pattern
    warm_start: Any = None


class _ValuesBlock(Sequence):
    """Problems of a same-structure batch as stacked values: a sequence of :class:`_Values`
    (what the Runner slices into tasks) that pickles as a few arrays.

    Parameters
    ----------
    indices : ndarray
        Batch indices of the rows.
    A, b, c : ndarray
        One row per problem: ``A``'s values, ``b``, ``c``.
    P : ndarray or None
        One row per problem: the upper triangle of the symmetric ``P`` (shared pattern).
    warm_starts : list
    """

    def __init__(self, indices: np.ndarray, A: np.ndarray, b: np.ndarray, c: np.ndarray,
                 P: np.ndarray | None, warm_starts: list) -> None:
        self.indices, self.A, self.b, self.c, self.P = indices, A, b, c, P
        self.warm_starts = warm_starts

    def __len__(self) -> int:
        return self.indices.size

    def __getitem__(self, k):
        P = None if self.P is None else self.P[k]
        if isinstance(k, slice):
            return _ValuesBlock(self.indices[k], self.A[k], self.b[k], self.c[k], P,
                                self.warm_starts[k])
        return _Values(int(self.indices[k]), self.A[k], self.b[k], self.c[k], P,
                       self.warm_starts[k])


class _Solved:
    """The outcome of one forward solve.

    ``info`` is built on first read when a ``make_info`` callable is given instead (the
    batched forward solver's optimal members); ``report`` is the refinement's report,
    also ``info["refinement"]`` as a dict (:meth:`take_report`).
    """

    __slots__ = ("index", "x", "y", "s", "status", "ok", "derivative", "report", "_info",
                 "_make_info")

    def __init__(self, index: int, x: np.ndarray, y: np.ndarray, s: np.ndarray,
                 info: dict | None, status: str, ok: bool,
                 make_info: Callable[[], dict] | None = None) -> None:
        self.index, self.x, self.y, self.s = index, x, y, s
        self.status, self.ok = status, ok
        self.derivative: _Derivative | None = None
        self.report: RefinementReport | None = None
        self._info, self._make_info = info, make_info

    @property
    def info(self) -> dict:
        if self._info is None:
            self._info = self._make_info()
            if self.report is not None:
                self._info["refinement"] = self.report.as_dict()
        return self._info

    def take_report(self, report: RefinementReport | None) -> None:
        """Record the refinement's report (in ``info`` too, once that is built)."""
        if report is not None:
            self.report = report
            if self._info is not None:
                self._info["refinement"] = report.as_dict()

    def __getstate__(self) -> dict:
        """Pickled with its ``info`` built (not with what builds it)."""
        state = {name: getattr(self, name) for name in self.__slots__
                 if not name.startswith("_")}
        state["_info"] = self.info
        return state

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._make_info = None


class _Derivative:
    """One problem's derivative: set up on first use, pickled without its factorisation.

    A worker process that receives it sets it up again (the SuperLU factors of ``K``
    cannot be pickled). With ``settings.refine`` (exact modes) the first set-up refines
    the solution (:mod:`~diffqcp_np.derivative.solution_refinement`): ``x``, ``y``, ``s``
    become the refined solution and ``report`` the refinement's report; a copy pickled
    afterwards sets up the derivative at the refined solution without refining again.
    """

    def __init__(self, settings: _Settings, problem: _Problem, x, y, s) -> None:
        self.settings = settings
        self.data, self.quadratic = problem.data, problem.quadratic
        self.x, self.y, self.s = x, y, s
        self.refine = settings.refine and settings.mode in EXACT_MODES
        self.report: RefinementReport | None = None
        self._built = None

    def get(self):
        """The derivative object (``SolutionDerivative`` or ``LPGDDerivative``)."""
        if self._built is None:
            if self.refine:
                refined = refine_solution(ResidualMap(self.data, self.quadratic.full),
                                          self.x, self.y, self.s, self._build)
                self.x, self.y, self.s = refined.x, refined.y, refined.s
                self.report, self.refine = refined.report, False
                self._built = refined.derivative
            else:
                self._built = self._build(self.x, self.y, self.s)
        return self._built

    def _build(self, x, y, s, previous=None, same_faces: bool = False):
        """The derivative at ``(x, y, s)`` (a refinement ``Builder``)."""
        st = self.settings
        if st.mode not in EXACT_MODES:
            return make_derivative(self.data, self.quadratic, x, y, s, st.mode,
                                   st.solve_method, st.solver_kwargs,
                                   st.derivative_kwargs).derivative
        if SMOOTHING in st.derivative_kwargs:
            return make_derivative(self.data, self.quadratic, x, y, s, st.mode,
                                   st.solve_method, st.solver_kwargs,
                                   st.derivative_kwargs).derivative
        options = {k: v for k, v in st.derivative_kwargs.items() if k not in LPGD_OPTIONS}
        if previous is not None:
            options.update(reuse=previous, same_faces=same_faces)
        if st.structure is not None:
            return st.structure.derivative(self.data, self.quadratic, x, y, s, st.mode,
                                           **options)
        return SolutionDerivative(self.data, x, y, s, st.mode, quadratic=self.quadratic,
                                  **options)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_built"] = None
        return state


@dataclass
class _Application:
    """A backward work item: apply one problem's derivative (or its adjoint) to ``args``."""

    index: int
    derivative: _Derivative
    args: tuple


@dataclass(frozen=True)
class _ForwardJob:
    settings: _Settings
    set_up_derivative: bool


@dataclass(frozen=True)
class _ValuesJob:
    solver: BatchSolver


@dataclass(frozen=True)
class _BackwardJob:
    method: str  # "jvp" or "vjp"
    kwargs: dict


# -- worker functions (module level: they are pickled) --------------------------------------
def _solved(index: int, result: SolverResult, n: int, m: int) -> _Solved:
    if not result.ok:
        nan_m = np.full(m, np.nan)
        return _Solved(index, np.full(n, np.nan), nan_m, nan_m.copy(), result.info,
                       result.status, False)
    return _Solved(index, result.x, result.y, result.s, result.info, result.status, True)


def _lost(item: _Problem | _Values, message: str) -> _Solved:
    """The outcome of a problem whose worker process died (``raise_on_error=False``)."""
    n, m = ((item.data.n, item.data.m) if isinstance(item, _Problem)
            else (item.c.size, item.b.size))
    status, status_val = SCS_STYLE_STATUS[FAILED]
    info = {"status": status, "status_val": status_val, "canonical_status": FAILED,
            "solver_status": "worker process died", "error_message": message}
    nan_m = np.full(m, np.nan)
    return _Solved(item.index, np.full(n, np.nan), nan_m, nan_m.copy(), info, FAILED, False)


def _forward(job: _ForwardJob, problem: _Problem) -> _Solved:
    st = job.settings
    data = problem.data
    if st.solver is not None:
        P = None if data.P is None else st.structure.upper_P(data.P.data)
        result = st.solver.solve(data.A.data, data.b, data.c, P, problem.warm_start)
    else:
        result = forward_solve(data, problem.quadratic, st.solve_method, problem.warm_start, False,
                        st.solver_kwargs)
    solved = _solved(problem.index, result, data.n, data.m)
    if solved.ok and job.set_up_derivative:
        solved.derivative = _Derivative(st, problem, result.x, result.y, result.s)
        solved.derivative.get()
        _take_refined(solved, solved.derivative)
    return solved


def _take_refined(solved: _Solved, derivative: _Derivative) -> None:
    """Give ``solved`` the solution ``derivative`` is taken at, and its report."""
    solved.x, solved.y, solved.s = derivative.x, derivative.y, derivative.s
    solved.take_report(derivative.report)


@dataclass
class _Setup:
    """A solved problem whose derivative is to be set up (a forward work item)."""

    problem: _Problem
    solved: _Solved

    @property
    def index(self) -> int:
        return self.problem.index


def _set_up(settings: _Settings, item: _Setup) -> None:
    r = item.solved
    r.derivative = _Derivative(settings, item.problem, r.x, r.y, r.s)
    r.derivative.get()
    _take_refined(r, r.derivative)


def _forward_values(job: _ValuesJob, item: _Values) -> _Solved:
    result = job.solver.solve(item.A, item.b, item.c, item.P, item.warm_start)
    return _solved(item.index, result, item.c.size, item.b.size)


def _apply(job: _BackwardJob, item: _Application):
    return getattr(item.derivative.get(), job.method)(*item.args, **job.kwargs)


def _refine(job: None, item: _Application) -> tuple:
    """Refine one problem's solution (in a worker): ``(x, y, s, report)``."""
    derivative = item.derivative
    derivative.get()
    return derivative.x, derivative.y, derivative.s, derivative.report


# -- input checks ---------------------------------------------------------------------------
def _as_list(value, name: str, size: int | None) -> list:
    """``value`` (a list, tuple, generator or other iterable) as a new list.

    Raises
    ------
    TypeError
        If it is not an iterable of per-problem entries (None, a number, a string, a
        dict, a sparse matrix).
    ValueError
        If its length is not ``size``.
    """
    if (value is None or isinstance(value, (str, bytes, Mapping)) or sp.issparse(value)
            or (isinstance(value, np.ndarray) and value.ndim == 0)):
        raise TypeError(f"{name} must be a list with one entry per problem, "
                        f"got {type(value).__name__}")
    try:
        out = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a list with one entry per problem, "
                        f"got {type(value).__name__}") from None
    if size is not None and len(out) != size:
        raise ValueError(f"{name} has {len(out)} entries, expected {size} (one per problem)")
    return out


def _check_lists(size: int | None, optional: tuple[str, ...] = (), **lists) -> list[list]:
    """The given per-problem lists as lists of equal length (the first one's when
    ``size`` is None); a name in ``optional`` given as None becomes a list of None."""
    out = {}
    for name, value in lists.items():
        if value is None and name in optional:
            continue
        out[name] = _as_list(value, name, size)
        if size is None:
            size = len(out[name])
    return [out.get(name, [None] * size) for name in lists]


def _validate(As, bs, cs, cone_dicts, Ps) -> tuple[list[tuple], BatchStructure | None]:
    """Validated copies of every problem's data, and the batch structure if shared.

    Raises
    ------
    ValueError
        ``"problem i: ..."`` naming the argument.
    """
    structure = BatchStructure.detect(As, Ps, cone_dicts)
    validated = None
    if structure is not None:
        validated = structure.problems(As, bs, cs, Ps)  # all at once, the common case
    if validated is None:
        validated = _validate_each(As, bs, cs, cone_dicts, Ps, structure)
    start = getattr(validated, "convex_before", 0)
    for i, (_, quadratic) in enumerate(validated[start:], start):
        try:
            check_positive_semidefinite(quadratic.full)
        except ValueError as err:
            raise ValueError(f"problem {i}: {err}") from err
    return validated, structure


def _validate_each(As, bs, cs, cone_dicts, Ps,
                   structure: BatchStructure | None) -> list[tuple]:
    """:func:`_validate`'s copies, problem by problem (naming the first failure)."""
    specs: dict[int, Any] = {}
    out = []
    for i, (A, b, c, cone_dict, P) in enumerate(zip(As, bs, cs, cone_dicts, Ps)):
        try:
            if structure is not None:
                out.append(structure.problem(A, b, c, P))
                continue
            if id(cone_dict) not in specs:
                specs[id(cone_dict)] = as_cone_spec(cone_dict)
            data = check_problem(A, b, c, specs[id(cone_dict)], P)
            out.append((data, QuadraticTerm(data.P, data.n)))
        except (ValueError, TypeError) as err:
            raise type(err)(f"problem {i}: {err}") from err
    return out


def _split_kwargs(kwargs: dict) -> tuple[str, dict, dict]:
    """``solve_method``, ``derivative_kwargs`` and the forward solver's settings."""
    kwargs = dict(kwargs)
    solve_method = kwargs.pop("solve_method", None) or BATCH_DEFAULT_SOLVER
    derivative_kwargs = derivative_options(kwargs)
    return solve_method, derivative_kwargs, kwargs


# -- the forward pass -----------------------------------------------------------------------
def _forward_pass(runner: Runner, settings: _Settings, problems: _Problems,
                  set_up_derivative: bool, raise_on_error: bool,
                  stacked: tuple | None) -> list[_Solved]:
    def check(solved: _Solved) -> None:
        if raise_on_error and not solved.ok:
            raise SolverError(f"{solved.info['error_message']} (problem {solved.index} of the "
                              "batch)")

    on_lost = None if raise_on_error else _lost
    if settings.batched is not None:
        solved = _batched_forward(runner, settings, problems, check, stacked)
        if set_up_derivative:
            runner.map(_set_up, settings, [_Setup(p, r) for p, r in zip(problems, solved)
                                           if r.ok], "solve")
    elif settings.solver is not None and not runner.in_process:
        solved = runner.map(_forward_values, _ValuesJob(settings.solver),
                            _value_items(settings.structure, problems, stacked), "solve",
                            on_result=check, on_lost=on_lost)
    else:
        solved = runner.map(_forward, _ForwardJob(settings, set_up_derivative), problems,
                            "solve", on_result=check, on_lost=on_lost)
    if settings.structure is not None:  # for warm_starts="previous"
        settings.structure.remember([(r.x, r.y, r.s) if r.ok else None for r in solved])
    return solved


def _batched_forward(runner: Runner, settings: _Settings, problems: _Problems,
                     check: Callable[[_Solved], None], stacked: tuple) -> list[_Solved]:
    """The forward pass of a same-structure batch on the batched interior-point method:
    one compiled solve of the stacked values, on this process's threads whatever the
    back end (sending small problems away costs more than solving them)."""
    m, n = settings.structure.shape
    warm_starts = problems.warm_starts
    for i, warm in enumerate(warm_starts):
        if warm is not None:
            try:
                warm_starts[i] = check_warm_start(warm, n, m)
            except (ValueError, TypeError) as err:
                tag_exception(err, i)
                raise
    items = _value_items(settings.structure, problems, stacked)
    local = runner.local()
    progress = local.progress_reporter(len(problems), "solve")
    try:  # its kernels call no BLAS: nothing to pin
        out = settings.batched.solve(items.A, items.b, items.c, items.P, items.warm_starts,
                                     n_jobs=local.n_jobs, progress=progress.update)
    finally:
        progress.close()
    solved = []
    for k, optimal in enumerate(out.optimal().tolist()):
        if optimal:
            solved.append(_Solved(k, out.x[k], out.y[k], out.s[k], None, OPTIMAL, True,
                                  functools.partial(out.optimal_info, k)))
        else:
            solved.append(_solved(k, out.result(k), n, m))
            check(solved[-1])
    return solved


def _value_items(structure: BatchStructure, problems: _Problems,
                 stacked: tuple) -> _ValuesBlock:
    """The problems of a same-structure batch as values (light to send to processes),
    from their ``stacked`` values (:func:`_stacked_values`)."""
    A, b, c, P_values = stacked
    P = None if structure.patterns.P_indices is None else structure.upper_P(P_values)
    return _ValuesBlock(np.arange(len(problems)), A, b, c, P, problems.warm_starts)


def _stacked_values(validated) -> tuple:
    """``(A, b, c, P)`` values of a same-structure batch, one row per problem (``P``
    as stored; None without it): validation's when it stacked them (see
    :class:`~.structure.ValidatedProblems`), else stacked from the problems' arrays."""
    stacked = getattr(validated, "stacked", None)
    if stacked is not None:
        return stacked
    datas = [data for data, _ in validated]
    P = None if datas[0].P is None else np.stack([d.P.data for d in datas])
    return (np.stack([d.A.data for d in datas]), np.stack([d.b for d in datas]),
            np.stack([d.c for d in datas]), P)


def _prepare(As, bs, cs, cone_dicts, warm_starts, Ps, settings_kwargs: dict):
    """The batch's problems, its settings, and, for a same-structure batch, its stacked
    values (:func:`_stacked_values`; else None)."""
    previous = isinstance(warm_starts, str)
    if previous and warm_starts != "previous":
        raise ValueError(f'warm_starts must be a list of (x, y, s) or None per problem, or '
                         f'"previous", got {warm_starts!r}')
    As, bs, cs, cone_dicts, warm_starts, Ps = _check_lists(
        None, ("warm_starts", "Ps"), As=As, bs=bs, cs=cs, cone_dicts=cone_dicts,
        warm_starts=None if previous else warm_starts, Ps=Ps)
    validated, structure = _validate(As, bs, cs, cone_dicts, Ps)
    if previous and structure is not None:
        warm_starts = structure.previous(len(validated)) or warm_starts
    problems = _Problems(validated, list(warm_starts))
    solver = batched = None
    if structure is not None:
        requested, kwargs = settings_kwargs["solve_method"], settings_kwargs["solver_kwargs"]
        method = resolve_solve_method(requested, structure.cones, structure.shape, kwargs)
        settings_kwargs = dict(settings_kwargs, solve_method=method)
        # set up once per structure and settings (kept with the structure across calls)
        key = (str(requested).lower(), str(method).upper(),
               tuple(sorted((name, repr(value)) for name, value in kwargs.items())))
        if str(method).upper() == "IPM":
            auto = str(requested).lower() == "auto"
            batched = structure.cached(key, lambda: BatchedIPM(
                structure.cones, structure.patterns, fallback="Clarabel" if auto else None,
                **kwargs))
        else:
            solver = structure.cached(key, lambda: BatchSolver(
                method, structure.cones, structure.patterns, **kwargs))
    return problems, _Settings(structure=structure, solver=solver, batched=batched,
                               **settings_kwargs), (
        None if structure is None else _stacked_values(validated))


def _outputs(solved: list[_Solved], return_info: bool, extra: tuple = ()) -> tuple:
    xs = [r.x for r in solved]
    ys = [r.y for r in solved]
    ss = [r.s for r in solved]
    infos = ([r.info for r in solved],) if return_info else ()
    return (xs, ys, ss) + extra + infos


# -- refinement -----------------------------------------------------------------------------
def _refine_pass(runner: Runner, solved: list[_Solved],
                 derivatives: list[_Derivative | None]) -> None:
    """Refine the solutions whose derivatives were not set up in the forward pass (they
    are set up in other processes), on ``runner``."""
    items = [_Application(i, d, ()) for i, d in enumerate(derivatives)
             if d is not None and d.refine]
    if not items:
        return
    for item, (x, y, s, report) in zip(items, runner.map(_refine, None, items, "refine")):
        derivative = item.derivative
        derivative.x, derivative.y, derivative.s = x, y, s
        derivative.report, derivative.refine = report, False
        _take_refined(solved[item.index], derivative)


def _warn_inaccurate(solved: list[_Solved]) -> None:
    """One :class:`InaccurateDerivativeWarning` naming the problems whose derivatives may
    be inaccurate (see ``RefinementReport.inaccurate``)."""
    flagged = [r.index for r in solved if r.report is not None and r.report.inaccurate]
    if flagged:
        warn_at_caller(
            f"{describe(flagged)} ({len(flagged)} of {len(solved)}): the solution does not "
            "decide the face of every cone, or refinement did not bring the residual "
            "down, so the derivative may be inaccurate (info['refinement'] with "
            "return_info=True says which rows and cones); solve with a tighter tolerance",
            InaccurateDerivativeWarning)


# -- the backward pass ----------------------------------------------------------------------
def _nan_csc(mat: sp.csc_matrix | None, n: int) -> sp.csc_matrix:
    if mat is None:
        return sp.csc_matrix((n, n))
    return sp.csc_matrix((np.full(mat.nnz, np.nan), mat.indices.copy(), mat.indptr.copy()),
                         shape=mat.shape)


def _failed_jvp(data: ProblemData) -> tuple:
    return np.full(data.n, np.nan), np.full(data.m, np.nan), np.full(data.m, np.nan)


def _failed_vjp(data: ProblemData, return_dP: bool) -> tuple:
    out = (_nan_csc(data.A, data.n), np.full(data.m, np.nan), np.full(data.n, np.nan))
    return out + (_nan_csc(data.P, data.n),) if return_dP else out


def _backward(runner: Runner, derivatives: list[_Derivative | None], problems: list[_Problem],
              job: _BackwardJob, args: list[tuple], failed_output: Callable,
              raise_on_error: bool) -> list:
    def lost(item: _Application, message: str) -> tuple:
        warn_at_caller(message, RuntimeWarning)
        return failed_output(item.derivative.data)

    items = [_Application(i, d, a) for i, (d, a) in enumerate(zip(derivatives, args))
             if d is not None]
    results = iter(runner.map(_apply, job, items, "derivative",
                              on_lost=None if raise_on_error else lost))
    return [next(results) if d is not None else failed_output(p.data)
            for d, p in zip(derivatives, problems)]


def _transpose_lists(results: list[tuple], count: int) -> tuple[list, ...]:
    return tuple([r[k] for r in results] for k in range(count))


def _dense_backward(runner: Runner, dense: DenseBatchDerivative, problems: list[_Problem],
                    method: str, args: tuple, kwargs: dict, failed_output: Callable,
                    count: int) -> tuple[list, ...]:
    """``D_batch``/``DT_batch`` on the batched dense derivative (see :mod:`.dense`).

    Returns the ``count`` output lists, in input order.
    """
    try:
        _check_unused_kwargs(kwargs)
    except TypeError as err:
        tag_exception(err, int(dense.members[0]))
        raise
    progress = runner.progress_reporter(int(dense.members.size), "derivative")
    try:
        lists = getattr(dense, method)(*args, progress=progress.update)
    finally:
        progress.close()
    if dense.members.size < len(problems):  # failed problems: NaN outputs
        for i, p in enumerate(problems):
            if lists[0][i] is None:
                for lst, value in zip(lists, failed_output(p.data)):
                    lst[i] = value
    return tuple(lists[:count])


def _batch_closures(runner: Runner, derivatives: list[_Derivative | None],
                    problems: list[_Problem], raise_on_error: bool,
                    dense: DenseBatchDerivative | None = None) -> tuple[Callable, Callable]:
    size = len(problems)

    def D_batch(dAs, dbs, dcs, dPs=None, **kwargs):
        """Apply each problem's derivative: ``dxs, dys, dss`` (lists, input order).

        Parameters
        ----------
        dAs, dbs, dcs : list
            Per-problem perturbations of A (on A's pattern), b and c; entries may be None.
        dPs : list, optional
            Per-problem perturbations of P, in P's storage convention.
        **kwargs
            Passed to every problem's ``D`` (``tau``, ``rho`` in the LPGD modes).
        """
        dAs, dbs, dcs, dPs = _check_lists(size, ("dAs", "dbs", "dcs", "dPs"), dAs=dAs,
                                          dbs=dbs, dcs=dcs, dPs=dPs)
        if dense is not None:
            return _dense_backward(runner, dense, problems, "jvp", (dAs, dbs, dcs, dPs),
                                   kwargs, _failed_jvp, 3)
        results = _backward(runner, derivatives, problems, _BackwardJob("jvp", kwargs),
                            list(zip(dAs, dbs, dcs, dPs)), _failed_jvp, raise_on_error)
        return _transpose_lists(results, 3)

    def DT_batch(dxs, dys, dss, return_dP: bool = False, **kwargs):
        """Apply each problem's adjoint derivative: ``dAs, dbs, dcs`` (+ ``dPs``).

        Parameters
        ----------
        dxs, dys, dss : list
            Per-problem cotangents of x, y and s; entries may be None.
        return_dP : bool, default False
            Also return the gradients with respect to P (on P's stored pattern).
        **kwargs
            Passed to every problem's ``DT`` (``tau``, ``rho`` in the LPGD modes).
        """
        dxs, dys, dss = _check_lists(size, ("dxs", "dys", "dss"), dxs=dxs, dys=dys, dss=dss)
        if dense is not None:
            return _dense_backward(runner, dense, problems, "vjp", (dxs, dys, dss, return_dP),
                                   kwargs, lambda data: _failed_vjp(data, return_dP),
                                   4 if return_dP else 3)
        job = _BackwardJob("vjp", dict(kwargs, return_dP=return_dP))
        results = _backward(runner, derivatives, problems, job, list(zip(dxs, dys, dss)),
                            lambda data: _failed_vjp(data, return_dP), raise_on_error)
        return _transpose_lists(results, 4 if return_dP else 3)

    # The batched dense derivative, when this batch uses it (None otherwise).
    D_batch.dense_batch = DT_batch.dense_batch = dense
    return D_batch, DT_batch


@contextmanager
def _collection_paused():
    """Python's cyclic garbage collector paused (and then restored) while a batch builds its
    per-problem objects: they hold no reference cycles, and the collections that their
    number triggers cost about a third of a large small-problem batch's forward pass."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _pausing_collection(fn: Callable) -> Callable:
    """``fn`` run with :func:`_collection_paused`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _collection_paused():
            return fn(*args, **kwargs)

    return wrapper


# -- public API -----------------------------------------------------------------------------
def _first_entries(**lists) -> dict:
    """The first entry of each list that has one (what selects the device path)."""
    return {name: value[0] for name, value in lists.items()
            if isinstance(value, Sequence) and len(value)}


@_pausing_collection
def solve_and_derivative_batch(As: Sequence, bs: Sequence, cs: Sequence, cone_dicts: Sequence,
                               n_jobs_forward: int = -1, n_jobs_backward: int = -1,
                               mode: str = DEFAULT_MODE, warm_starts: Sequence | None = None,
                               Ps: Sequence | None = None, *, backend: str | None = None,
                               executor: Executor | None = None, raise_on_error: bool = True,
                               progress: ProgressLike = False, chunksize: int | None = None,
                               return_info: bool = False, refine: bool = True, **kwargs: Any):
    """Solve a batch of cone programs and return batched derivative maps.

    Parameters
    ----------
    As, bs, cs, cone_dicts : list
        Per-problem ``A``, ``b``, ``c`` and cone dict, as for ``solve_and_derivative``.
    n_jobs_forward, n_jobs_backward : int, default -1
        Workers for the forward and backward passes: ``-1`` for all cores, ``1`` to run
        serially in the calling thread. With ``executor=`` they only set the number of
        tasks (about four per job).
    mode : str, default "direct"
        Derivative mode, as for ``solve_and_derivative``.
    warm_starts : list of (x, y, s) or None, or "previous", optional
        Per-problem warm starts (entries may be None). ``"previous"``: the solutions of
        the last batch of the same structure and size solved in this process (none for
        the first, or for a batch whose problems differ in structure).
    Ps : list, optional
        Per-problem quadratic objectives (full symmetric or upper triangle).
    backend : {"threads", "processes", "serial"}, optional
        Default ``"threads"``; not to be combined with ``executor``.
    executor : concurrent.futures.Executor, optional
        Runs the tasks of both passes (e.g. ``distributed.Client(...).get_executor()``);
        it must stay open while ``D_batch``/``DT_batch`` are used.
    raise_on_error : bool, default True
        Raise :class:`SolverError` naming the first failed problem; otherwise give it
        NaN results (see the module docstring) and keep the others.
    progress : bool or callable, default False
        ``True`` for a tqdm progress bar (a warning and no bar without tqdm), or
        ``callback(done, total)``, called as tasks complete in each pass (the forward
        pass and every ``D_batch``/``DT_batch`` call).
    chunksize : int, optional
        Problems per task (default: about four tasks per worker). ``chunksize=1``
        pins a crashed worker to exactly the problems it was running.
    return_info : bool, default False
        Also return the per-problem solver ``info`` dicts (with ``info["refinement"]``,
        the refinement's report, in the exact modes).
    refine : bool, default True
        In the exact modes, refine every solution before differentiating it, as
        ``solve_and_derivative`` does (see the module docstring); one
        :class:`InaccurateDerivativeWarning` names the problems whose solutions do not
        decide every face. ``False``: neither refined nor checked.
    **kwargs
        ``solve_method``, ``derivative_kwargs`` and forward-solver settings, as for
        ``solve_and_derivative``; ``device`` (None, "cpu" or "cuda"): CuPy data or
        ``device="cuda"`` differentiate on the device (:mod:`diffqcp_np.gpu.batch`: the
        forward pass on the host, same-structure problems factored together).

    Returns
    -------
    xs, ys, ss : list of ndarray
        Solutions (refined, with ``refine``), in input order.
    D_batch : callable
        ``D_batch(dAs, dbs, dcs, dPs=None) -> (dxs, dys, dss)``, lists in input order.
    DT_batch : callable
        ``DT_batch(dxs, dys, dss, return_dP=False) -> (dAs, dbs, dcs[, dPs])``.
    infos : list of dict
        Only with ``return_info=True``.

    Raises
    ------
    ValueError
        On lists of different lengths (naming the argument), invalid problem data
        (``"problem i: ..."``) or invalid options.
    SolverError
        When a problem has no solution and ``raise_on_error`` is True.
    RuntimeError
        When a worker process dies or the executor cannot run a task.
    """
    if device_requested(kwargs.pop("device", None), _first_entries(As=As, bs=bs, cs=cs,
                                                                   Ps=Ps)):
        from ..gpu import batch as device_batch

        return device_batch.solve_and_derivative_batch(
            As, bs, cs, cone_dicts, n_jobs_forward, n_jobs_backward, mode, warm_starts, Ps,
            forward=solve_only_batch, backend=backend, executor=executor,
            raise_on_error=raise_on_error, progress=progress, chunksize=chunksize,
            return_info=return_info, **kwargs)
    mode = check_mode(mode)
    solve_method, derivative_kwargs, solver_kwargs = _split_kwargs(kwargs)
    problems, settings, stacked = _prepare(
        As, bs, cs, cone_dicts, warm_starts, Ps,
        dict(solve_method=solve_method, solver_kwargs=solver_kwargs, mode=mode,
             derivative_kwargs=derivative_kwargs,
             refine=refine and mode in EXACT_MODES and SMOOTHING not in derivative_kwargs),
    )
    size = len(problems)
    forward = make_runner(backend, executor, n_jobs_forward, "n_jobs_forward", size,
                          chunksize, progress)
    backward = make_runner(backend, executor, n_jobs_backward, "n_jobs_backward", size,
                           chunksize, progress)
    in_process = forward.in_process and backward.in_process
    options = {k: v for k, v in derivative_kwargs.items() if k not in LPGD_OPTIONS}
    use_dense = dense_batch.applies(settings.structure, mode, options, size)
    # Set up derivatives where they are found only when they stay in this process (the
    # batched dense derivative sets them up after the forward pass, all at once, in this
    # process whatever the back end: it costs less than sending the problems away).
    solved = _forward_pass(forward, settings, problems, in_process and not use_dense,
                           raise_on_error, stacked)
    dense = None
    if use_dense:
        backward = backward.local()
        derivatives = [None] * size  # the batched derivative covers every solved problem
        members = [i for i, r in enumerate(solved) if r.ok]
        if members:
            def fallback(i: int):  # a singular member's own (least-squares) derivative
                r = solved[i]
                derivative = _Derivative(settings, problems[i], r.x, r.y, r.s)
                built = derivative.get()
                _take_refined(r, derivative)
                return built

            dense = DenseBatchDerivative.build(
                settings.structure, backward, size, members,
                stacked,
                [r.x for r in solved], [r.y for r in solved], [r.s for r in solved],
                fallback, refine=settings.refine)
            if settings.refine:  # the refined solutions, in arrays of their own
                X, Y, S = dense.X.copy(), dense.Y.copy(), dense.S.copy()
                for k, i in enumerate(dense.members):
                    if dense.reports[k] is not None:
                        r = solved[i]
                        r.x, r.y, r.s = X[k], Y[k], S[k]
                        r.take_report(dense.reports[k])
    else:
        derivatives = [
            None if not r.ok
            else r.derivative if r.derivative is not None
            else _Derivative(settings, p, r.x, r.y, r.s)
            for r, p in zip(solved, problems)
        ]
        _refine_pass(forward, solved, derivatives)
    _warn_inaccurate(solved)
    return _outputs(solved, return_info,
                    _batch_closures(backward, derivatives, problems, raise_on_error,
                                    dense))


@_pausing_collection
def solve_only_batch(As: Sequence, bs: Sequence, cs: Sequence, cone_dicts: Sequence,
                     n_jobs_forward: int = -1, warm_starts: Sequence | None = None,
                     Ps: Sequence | None = None, *, backend: str | None = None,
                     executor: Executor | None = None, raise_on_error: bool = True,
                     progress: ProgressLike = False, chunksize: int | None = None,
                     return_info: bool = False, **kwargs: Any):
    """Solve a batch of cone programs (no derivative).

    Parameters and failure handling are those of :func:`solve_and_derivative_batch`.

    Returns
    -------
    xs, ys, ss : list of ndarray
        Solutions, in input order (NaN for failed problems with ``raise_on_error=False``).
    infos : list of dict
        Only with ``return_info=True``.
    """
    solve_method = kwargs.pop("solve_method", None) or BATCH_DEFAULT_SOLVER
    problems, settings, stacked = _prepare(As, bs, cs, cone_dicts, warm_starts, Ps,
                                  dict(solve_method=solve_method, solver_kwargs=kwargs))
    runner = make_runner(backend, executor, n_jobs_forward, "n_jobs_forward", len(problems),
                         chunksize, progress)
    solved = _forward_pass(runner, settings, problems, False, raise_on_error, stacked)
    return _outputs(solved, return_info)
