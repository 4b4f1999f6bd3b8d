"""A batched dense derivative for same-structure batches of small problems.

For a batch of problems that share one cone dict and one pattern of ``A`` (and ``P``)
(see :mod:`diffqcp_np.batch.structure`) whose derivative system

    K = [[P, A'D], [−A, I−D]]        (N × N, N = n + m)

is small (``N ≤`` :data:`DENSE_MAX_DIM`), a per-problem sparse LU costs far more in
Python and SciPy overhead than in arithmetic. This module sets the batch up at once:

* the cone Jacobians ``D`` of a block of problems come from ONE :class:`ConeJacobian`
  call on a combined cone product (each cone kind's count times the block size; the
  problems' ``v = y − s`` regrouped by kind with a precomputed permutation). Their
  values are read on the structure's block-diagonal superset pattern (full cone blocks,
  the same for every problem) by probing (one matvec per column of the largest cone
  block) or, for large cone blocks, from ``to_sparse``;
* a compiled kernel writes each problem's dense system from the values of ``A``, ``P``
  and ``D`` through precomputed index maps (``D'A`` on A's row pattern), leaving out the
  rows and columns of the cone rows where ``D`` vanishes (e.g. inactive inequalities:
  their unknowns follow from the others, see the storage notes in :mod:`._dense_numba`),
  and another factors it in place with LAPACK ``getrf`` (SciPy's LAPACK, called from a
  compiled loop) and records the pivot ratio;
* every ``D_batch``/``DT_batch`` call reuses the factors: one compiled pass over the batch
  builds the right-hand sides, runs the triangular solves and computes the outputs
  (``dA``'s and ``dP``'s values as ``(B, nnz)`` arrays, wrapped into CSC matrices on
  the stored patterns without re-validation).

Members whose factorisation is singular or badly conditioned (pivot ratio below
``SINGULAR_PIVOT_RATIO``, or not finite) get the general path's per-problem derivative,
which answers by least squares and warns (:class:`NonDifferentiableWarning`, naming the
problem) where a requested product does not exist.
"""

from __future__ import annotations

import warnings
from functools import cached_property
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from . import structure as batch_structure
from .._fast_checks import all_finite
from .structure import BatchStructure, _JacobianPattern
from ..solvers.base import CSCFactory
from .runner import BLAS_PIN, Runner, tag_exception
from .._validation import as_vector
from .._warnings import warn_at_caller
from ..cones.projection import ConeJacobian
from ..cones.spec import ConeSpec
from ._structure_numba import gather_symmetric
from ._dense_numba import (
    _GETRF,
    _assemble_kernel,
    _getrf_kernel,
    _jvp_kernel,
    _pivot_ratios,
    _solve_kernel,
    _vjp_kernel,
)
from .dense_refinement import refine_block
from ..derivative.linear_solvers import PERMC_SPECS, SINGULAR_PIVOT_RATIO
from ..derivative.patterns import MatrixPattern
from ..derivative.solution_map import warn_not_finite

#: Largest ``N = n + m`` for which the batched dense derivative is used: below it the
#: dense path beats the per-problem sparse one on same-structure QPs, also where no row
#: of ``D`` vanishes (``benchmarks/bench_batch.py``). Its factors take 8 N² bytes per
#: problem (320 kB at 200).
DENSE_MAX_DIM = 200
#: Largest total size of a batch's stored factors (bytes), ``8 N²`` per problem.
DENSE_MAX_BYTES = 1 << 30
#: Target size of the systems of one block of the setup (bytes): a block stays in cache
#: between its assembly and its factorisation.
BLOCK_BYTES = 1 << 21
#: Bounds on the number of problems per block.
MIN_BLOCK, MAX_BLOCK = 4, 256
#: Fewest members per thread for the setup to run on threads: below it handing blocks to
#: a pool costs more than it saves (``benchmarks/bench_training_loop.py`` at B = 32).
MIN_PER_THREAD = 64


# -- factorisation ----------------------------------------------------------------------------
def _factor(LU: np.ndarray, nk: np.ndarray, piv: np.ndarray, ratio: np.ndarray) -> None:
    """Factor each problem's ``K_red`` in place (storage: :mod:`._dense_numba`)."""
    if _GETRF is not None:
        _getrf_kernel(LU, nk, piv)
    else:
        from scipy.linalg import lapack

        for b in range(LU.shape[0]):
            k = int(nk[b])
            if k:
                F = LU[b].reshape(-1)[:k * k].reshape(k, k)
                _, piv[b, :k], _ = lapack.dgetrf(F.T, overwrite_a=1)
    _pivot_ratios(LU, nk, ratio)


# -- layouts ----------------------------------------------------------------------------------
def _combined_spec(spec: ConeSpec, count: int) -> ConeSpec:
    """The product of ``count`` copies of ``spec``, grouped by cone kind."""
    return ConeSpec(zero=spec.zero * count, nonneg=spec.nonneg * count, soc=spec.soc * count,
                    psd=spec.psd * count, exp=spec.exp * count,
                    exp_dual=spec.exp_dual * count, power=spec.power * count)


class _BlockLayout:
    """Index maps for a block of ``count`` problems (they depend only on the count).

    Attributes
    ----------
    spec : ConeSpec
        The combined cone product.
    perm : ndarray
        ``perm[p] = b m + i``: combined row ``p`` is row ``i`` of problem ``b``.
    probes : ndarray (n_probes, count m) or None
        Combined probes: applying the combined Jacobian to probe ``j`` gives column ``j``
        of every cone block. None when the largest cone block exceeds ``PROBE_LIMIT``.
    gather : ndarray (count, nnz_D)
        Where entry ``e`` of problem ``b`` lies in the stacked probe results.
    """

    def __init__(self, layout: DenseLayout, count: int) -> None:
        spec, m = layout.spec, layout.m
        jac = layout.jacobian
        self.count = count
        self.spec = _combined_spec(spec, count)
        base = np.arange(count, dtype=np.int64) * m
        parts = [np.add.outer(base, np.arange(sl.start, sl.stop, dtype=np.int64)).ravel()
                 for sl in spec.slices().values()]
        self.perm = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        self.inverse = np.empty_like(self.perm)
        self.inverse[self.perm] = np.arange(self.perm.size)
        self.probes = None
        if jac.n_probes <= batch_structure.PROBE_LIMIT:
            local = np.tile(jac._probes, (1, count))  # (n_probes, count m), problem-major
            self.probes = np.ascontiguousarray(local[:, self.perm])
            where = self.inverse.reshape(count, m)[:, jac.rows]  # (count, nnz_D)
            self.gather = jac._probe_of_entry[None, :] * (count * m) + where

    def combined(self, V: np.ndarray) -> np.ndarray:
        """The rows of ``V`` (count, m) as one vector of the combined cone product."""
        return V.reshape(-1)[self.perm]

    def uncombined(self, v: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`combined`."""
        return v[self.inverse].reshape(self.count, -1)

    @cached_property
    def _block_order(self) -> np.ndarray:
        """``by_problem(values) = values[_block_order]``: the cone blocks of the combined
        product (in the order of :func:`~diffqcp_np.derivative.solution_refinement.
        block_starts`: kind by kind, each problem's in turn) problem by problem."""
        spec, count = self.spec, self.count
        per_kind = [k // count for k in (spec.nonneg, len(spec.soc), len(spec.psd), spec.exp,
                                         spec.exp_dual, len(spec.power))]
        first = np.cumsum([0] + [count * k for k in per_kind])[:-1]
        parts = [f + np.arange(count * k).reshape(count, k) for f, k in zip(first, per_kind)]
        return np.concatenate(parts, axis=1) if parts else np.zeros((count, 0), np.int64)

    def by_problem(self, values: np.ndarray) -> np.ndarray:
        """Values of the combined product's cone blocks as ``(count, blocks per problem)``
        (the blocks of one problem in its own order)."""
        return values[self._block_order]

    def by_kind(self, values: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`by_problem` (``values`` of shape ``(count, blocks per
        problem)``)."""
        out = np.empty(values.size, dtype=values.dtype)
        out[self._block_order] = values
        return out

    def jacobian(self, V: np.ndarray) -> ConeJacobian:
        """The combined cone Jacobian at ``V = Y − S`` (count, m)."""
        return ConeJacobian(self.combined(V), self.spec, dual=True)

    def jacobian_values(self, layout: DenseLayout, V: np.ndarray) -> np.ndarray:
        """The cone Jacobians' values ``(count, nnz_D)`` at ``V = Y − S`` (count, m)."""
        if layout.D_rows.size == 0:
            return np.zeros((self.count, 0))
        return self.values(layout, self.jacobian(V))

    def values(self, layout: DenseLayout, jac: ConeJacobian) -> np.ndarray:
        """The values ``(count, nnz_D)`` of the combined cone Jacobian ``jac``."""
        if layout.D_rows.size == 0:
            return np.zeros((self.count, 0))
        if self.probes is not None:
            columns = np.stack([jac.matvec(p) for p in self.probes])
            return columns.reshape(-1)[self.gather]
        D = jac.to_sparse()
        m, count = layout.m, self.count
        rows = self.perm[D.indices]
        cols = self.perm[np.repeat(np.arange(D.shape[1]), np.diff(D.indptr))]
        prob, r = np.divmod(rows, m)
        entry = layout.entry_of[(cols % m) * m + r]
        out = np.zeros((count, layout.D_rows.size))
        out.reshape(-1)[prob * layout.D_rows.size + entry] = D.data
        return out


class DenseLayout:
    """What the batched dense derivative precomputes for a :class:`BatchStructure`."""

    def __init__(self, structure: BatchStructure) -> None:
        m, n = structure.shape
        self.structure = structure
        self.spec = structure.cones
        self.m, self.n, self.N = m, n, n + m
        pat = structure.A_pattern
        self.A_pattern = pat
        self.A_rows, self.A_cols = pat.rows, pat.cols
        self.A_indptr, self.A_indices = pat.indptr, pat.indices
        order = np.argsort(pat.rows, kind="stable")  # A by rows, for D'A
        self.Ar_ptr = np.concatenate(([0], np.cumsum(np.bincount(pat.rows, minlength=m))))
        self.Ar_cols = pat.cols[order]
        self.Ar_pos = order.astype(np.int64)
        self.A_factory = CSCFactory(pat.indices, pat.indptr, pat.shape)
        jac = self.jacobian = _JacobianPattern(self.spec)
        self.D_rows, self.D_cols = jac.rows.astype(np.int64), jac.cols.astype(np.int64)
        self.diagonal_D = bool(np.array_equal(self.D_rows, self.D_cols))
        self.entry_of = np.full(m * m, -1, dtype=np.int64)
        self.entry_of[self.D_cols * m + self.D_rows] = np.arange(self.D_rows.size)
        q = self.quadratic = structure._quadratic
        if q is None:
            self.U_rows = self.U_cols = np.zeros(0, np.int64)
            self.U_indptr = np.zeros(n + 1, np.int64)
            self.U_a = self.U_b = np.zeros(0, np.int64)
            self.U_weight = 1.0
            self.P_rows = self.P_cols = np.zeros(0, np.int64)
            self.P_scale = np.zeros(0)
        else:
            ppat = self.P_pattern = q.pattern
            self.P_rows, self.P_cols = ppat.rows, ppat.cols
            self.U_rows = q.indices.astype(np.int64)
            self.U_cols = np.repeat(np.arange(n, dtype=np.int64), np.diff(q.indptr))
            self.U_indptr = q.indptr.astype(np.int64)
            self.U_a, self.U_b = q._a.astype(np.int64), q._b.astype(np.int64)
            self.U_weight = float(q._weight)
            scale = 2.0 if q.storage == "upper" else 1.0
            self.P_scale = np.where(ppat.rows == ppat.cols, 1.0, scale)
            self.P_factory = CSCFactory(ppat.indices, ppat.indptr, ppat.shape)
        self._blocks: dict[int, _BlockLayout] = {}

    def block(self, count: int) -> _BlockLayout:
        layout = self._blocks.get(count)
        if layout is None:
            layout = self._blocks[count] = _BlockLayout(self, count)
        return layout

    def block_size(self) -> int:
        size = BLOCK_BYTES // max(8 * self.N * self.N, 1)
        return int(min(max(size, MIN_BLOCK), MAX_BLOCK))


def layout_of(structure: BatchStructure) -> DenseLayout:
    """The structure's :class:`DenseLayout` (built once, kept on the structure)."""
    layout = structure.__dict__.get("_dense_layout")
    if layout is None:
        layout = structure.__dict__["_dense_layout"] = DenseLayout(structure)
    return layout


def applies(structure: BatchStructure | None, mode: str | None, options: dict,
            count: int) -> bool:
    """Whether a batch of ``count`` problems takes the batched dense derivative.

    It does for a shared structure, the exact factorising modes (``direct``, ``dense``),
    options those modes accept (``permc_spec`` is moot for a dense LU), a small system
    (``N ≤ DENSE_MAX_DIM``) and factors within :data:`DENSE_MAX_BYTES`.
    """
    if structure is None or mode not in ("direct", "dense") or count < 1:
        return False
    allowed = {"permc_spec"} if mode == "direct" else set()
    if not set(options) <= allowed:
        return False
    if "permc_spec" in options and options["permc_spec"] not in PERMC_SPECS:
        return False
    N = sum(structure.shape)
    return N <= DENSE_MAX_DIM and count * 8 * N * N <= DENSE_MAX_BYTES


# -- per-problem inputs -----------------------------------------------------------------------
def _stack_vectors(values: Sequence, members: np.ndarray, name: str, size: int) -> np.ndarray:
    """Rows ``values[i]`` (None: zeros) for ``i`` in ``members``, checked like ``as_vector``.

    Raises
    ------
    ValueError
        As ``as_vector`` does, tagged with the problem's index.
    """
    picked = [values[i] for i in members]
    if all(type(v) is np.ndarray and v.dtype == np.float64 and v.shape == (size,)
           for v in picked):
        out = (np.concatenate(picked) if picked else np.zeros(0)).reshape(len(picked), size)
    else:
        out = np.zeros((len(picked), size))
        for k, v in enumerate(picked):
            if v is None:
                continue
            try:
                out[k] = as_vector(v, name, size)
            except (ValueError, TypeError) as err:
                tag_exception(err, int(members[k]))
                raise
    finite = np.isfinite(out)
    if not finite.all():
        k = int(np.flatnonzero(~finite.all(axis=1))[0])
        err = ValueError(f"{name} contains NaN or Inf")
        tag_exception(err, int(members[k]))
        raise err
    return out


def _stack_patterns(values: Sequence, members: np.ndarray, pattern: MatrixPattern,
                    name: str) -> np.ndarray:
    """Values ``(count, nnz)`` of the perturbations ``values[i]`` (None: zeros) on a pattern.

    Raises
    ------
    ValueError
        As the general path does, tagged with the problem's index.
    """
    picked = [values[i] for i in members]
    nnz = pattern.nnz
    # The common case, checked in bulk: every perturbation float64 on the pattern.
    if (picked and batch_structure.all_on_pattern(picked, pattern.indices, pattern.indptr,
                                                  pattern.shape)
            and all(d.dtype == np.float64 and d.data.size == nnz for d in picked)):
        data = np.concatenate([d.data for d in picked]).reshape(len(picked), nnz)
        if np.isfinite(data).all():
            return data
    out = np.zeros((members.size, nnz))
    for k, i in enumerate(members):
        if values[i] is None:
            continue
        try:
            out[k] = pattern.perturbation_values(values[i], name)
        except (ValueError, TypeError) as err:
            tag_exception(err, int(i))
            raise
    return out


def _check_finite(name: str, members: np.ndarray, skipped: np.ndarray,
                  *outputs: np.ndarray) -> None:
    """Warn (``NonFiniteDerivativeWarning``) naming the first member whose rows of the
    ``(count, ·)`` outputs hold NaN or Inf (rows ``skipped`` are answered elsewhere)."""
    if all(all_finite(out.reshape(-1)) for out in outputs):
        return
    bad = np.zeros(members.size, dtype=bool)
    for out in outputs:
        if out.shape[0]:
            bad |= ~np.isfinite(out).all(axis=1)
    bad &= ~skipped
    if bad.any():
        warn_not_finite(f"{name} of problem {int(members[np.argmax(bad)])}")


# -- the batch --------------------------------------------------------------------------------
class _Span:
    """Members ``start:stop`` of the batched derivative (a work item of a Runner)."""

    def __init__(self, start: int, stop: int, index: int) -> None:
        self.start, self.stop, self.index = start, stop, index

    def __len__(self) -> int:
        return self.stop - self.start


def _set_up(batch: DenseBatchDerivative, span: _Span) -> None:
    batch._set_up_span(span.start, span.stop)


def _refine(batch: DenseBatchDerivative, span: _Span) -> None:
    refine_block(batch, span.start, span.stop)


def _spans(members: np.ndarray, block: int) -> list[_Span]:
    """The members in spans of ``block``."""
    return [_Span(k, min(k + block, members.size), int(members[k]))
            for k in range(0, members.size, block)]


def _stack_rows(arrays: list, size: int) -> np.ndarray:
    if not arrays:
        return np.zeros((0, size))
    return np.concatenate(arrays).astype(np.float64, copy=False).reshape(len(arrays), size)


def _naming_warnings(index: int, fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, its warnings re-issued at the caller with ``"problem i: "``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    for w in caught:
        warn_at_caller(f"problem {index}: {w.message}", w.category)
    return out


class DenseBatchDerivative:
    """The derivatives of the solved members of a same-structure batch, set up at once.

    Built by :meth:`build`; :meth:`jvp` and :meth:`vjp` apply every member's derivative
    (or its adjoint) in one compiled pass.

    Attributes
    ----------
    members : ndarray
        Batch indices of the problems it differentiates.
    pivot_ratio : ndarray
        Per member: ``min |U_ii| / max |U_ii|`` of its dense LU.
    singular : ndarray of bool
        Per member: the dense LU is singular or badly conditioned, so the member uses
        the general path's per-problem derivative (``fallbacks``).
    fallbacks : dict
        Batch index → per-problem derivative (``StructuredDerivative``).
    X, Y, S : ndarray
        Per member: the solution the derivative is taken at (refined, with ``refine``).
    reports : list
        Per member: the :class:`~diffqcp_np.derivative.solution_refinement.RefinementReport`
        of its refinement (None without ``refine``, and for singular members, whose
        per-problem derivatives refine them).
    """

    def __init__(self, layout: DenseLayout, size: int, members: np.ndarray, values: tuple,
                 xs: Sequence, ys: Sequence, ss: Sequence, refine: bool = False) -> None:
        self.layout = L = layout
        self.size = size
        self.members = members
        self.refine = refine
        count = members.size
        self.X = _stack_rows([xs[i] for i in members], L.n)
        self.Y = _stack_rows([ys[i] for i in members], L.m)
        self.S = _stack_rows([ss[i] for i in members], L.m)
        A_vals, b, c, P_vals = values
        self.A_vals = A_vals[members]
        self.P_vals = np.zeros((count, 0)) if L.quadratic is None else P_vals[members]
        # the symmetric P's values on its union pattern: written per span by the set-up
        self.P_union = np.zeros((count, L.U_rows.size))
        if refine:  # the residual map needs b and c
            self.B, self.C = b[members], c[members]
        self.reports: list = [None] * count
        self.LU = np.empty((count, L.N, L.N))
        self.nk = np.zeros(count, dtype=np.int64)
        self.order = np.zeros((count, L.N), dtype=np.int64)
        self.piv = np.zeros((count, L.N), dtype=np.int32)
        self.pivot_ratio = np.zeros(count)
        self.D_vals = np.zeros((count, L.D_rows.size))
        self.singular = np.zeros(count, dtype=bool)
        self.fallbacks: dict[int, Any] = {}

    def _set_up_span(self, start: int, stop: int) -> None:
        L = self.layout
        block = L.block(stop - start)
        V = self.Y[start:stop] - self.S[start:stop]
        self.D_vals[start:stop] = block.jacobian_values(L, V)
        if L.U_rows.size:
            self.P_union[start:stop] = gather_symmetric(self.P_vals[start:stop], L.U_a,
                                                        L.U_b, L.U_weight, False, 0.0)[0]
        self._factor_members(slice(start, stop))

    def _factor_members(self, rows: slice | np.ndarray) -> None:
        """Assemble and factor the systems of members ``rows`` from their values and
        ``D_vals`` (a slice works in place; an index array through copies)."""
        L = self.layout
        LU, nk, order, piv = self.LU[rows], self.nk[rows], self.order[rows], self.piv[rows]
        ratio = self.pivot_ratio[rows]
        _assemble_kernel(LU, nk, order, self.A_vals[rows], self.P_union[rows],
                         self.D_vals[rows], L.A_rows, L.A_cols, L.U_rows, L.U_cols,
                         L.D_rows, L.D_cols, L.Ar_ptr, L.Ar_cols, L.Ar_pos, L.n)
        _factor(LU, nk, piv, ratio)
        if not isinstance(rows, slice):
            self.LU[rows], self.nk[rows], self.order[rows] = LU, nk, order
            self.piv[rows], self.pivot_ratio[rows] = piv, ratio

    # -- what refinement (:mod:`.dense_refinement`) uses -----------------------------
    @property
    def refactors_compiled(self) -> bool:
        """Whether compiled kernels can factor a member again (Numba's LAPACK binding is
        available)."""
        return _GETRF is not None

    def singular_members(self, start: int, stop: int) -> np.ndarray:
        """Whether the factorisation of each member ``start:stop`` is singular."""
        return ~(self.pivot_ratio[start:stop] >= SINGULAR_PIVOT_RATIO)  # NaN: singular

    def solve(self, members: np.ndarray, Z: np.ndarray) -> None:
        """``K z = r`` for each of ``members`` (indices into the members), in place in
        the rows of ``Z``."""
        L = self.layout
        _solve_kernel(self.LU, self.nk, self.order, self.piv, members, self.A_vals,
                      L.Ar_ptr, L.Ar_cols, L.Ar_pos, L.n, Z)

    def refactor(self, members: np.ndarray, D_vals: np.ndarray) -> None:
        """Factor the systems of ``members`` (indices into the members) again with new
        cone Jacobian values."""
        self.D_vals[members] = D_vals
        self._factor_members(members)

    @classmethod
    def build(cls, structure: BatchStructure, runner: Runner, size: int,
              members: Sequence[int], values: tuple, xs: Sequence, ys: Sequence,
              ss: Sequence, fallback: Callable[[int], Any],
              refine: bool = False) -> DenseBatchDerivative:
        """Set up (factor) the derivatives of ``members`` (batch indices), refining
        their solutions first if ``refine`` (:mod:`.dense_refinement`).

        Parameters
        ----------
        structure : BatchStructure
        runner : Runner
            Runs the blocks of the setup (serially or on threads; no progress report).
        size : int
            The batch size.
        members : sequence of int
        values : tuple
            ``(A, b, c, P)``: per batch index (row), the validated values of ``A``
            (on its pattern), ``b``, ``c`` and ``P`` (as stored; None without it).
        xs, ys, ss : sequence
            Per batch index: the solution.
        fallback : callable
            ``fallback(i)`` returns problem ``i``'s per-problem derivative (used for
            singular members); warnings it raises are re-issued naming the problem.
        refine : bool, default False
            Refine the members' solutions before differentiating.
        """
        layout = layout_of(structure)
        members = np.asarray(members, dtype=np.int64)
        out = cls(layout, size, members, values, xs, ys, ss, refine)
        block = layout.block_size()
        workers = max(1, min(runner.n_jobs, members.size // MIN_PER_THREAD))
        kind = runner.kind if workers > 1 else "serial"
        per_worker = -(-members.size // workers)
        if kind != "serial":  # at least one block per worker
            block = max(1, min(block, per_worker))
        quiet = Runner(kind, workers, runner.executor if workers > 1 else None, 1, False)
        with BLAS_PIN:
            quiet.map(_set_up, out, _spans(members, block), "setup")
            if refine:  # a span per worker: refinement's steps are vector operations
                quiet.map(_refine, out, _spans(members, max(per_worker, 1)), "refine")
        del out.P_vals, out.P_union
        if refine:
            del out.B, out.C
        out.singular = out.singular_members(0, members.size)
        for i in members[out.singular]:
            i = int(i)
            out.fallbacks[i] = _naming_warnings(i, fallback, i)
        return out

    # -- application ------------------------------------------------------------------------
    def _apply_fallbacks(self, method: str, calls: dict) -> dict:
        """``{i: fallbacks[i].method(*args, **kwargs)}`` for ``calls = {i: (args, kwargs)}``."""
        out = {}
        for i, args in calls.items():
            try:
                out[i] = _naming_warnings(i, getattr(self.fallbacks[i], method), *args[0],
                                          **args[1])
            except Exception as err:
                tag_exception(err, i)
                raise
        return out

    def vjp(self, dxs: Sequence, dys: Sequence, dss: Sequence, return_dP: bool = False,
            progress: Callable[[int], Any] | None = None) -> tuple[list, ...]:
        """Apply every member's adjoint derivative.

        Returns
        -------
        dAs, dbs, dcs[, dPs] : list
            Per batch index (None for problems that are not members).
        """
        L = self.layout
        m, n = L.m, L.n
        members = self.members
        count = members.size
        GX = _stack_vectors(dxs, members, "dx", n)
        GY = _stack_vectors(dys, members, "dy", m)
        GS = _stack_vectors(dss, members, "ds", m)
        W = np.empty((count, L.N))
        dA = np.empty((count, L.A_rows.size))
        want_dP = return_dP and L.quadratic is not None
        dP = np.empty((count if want_dP else 0, L.P_rows.size))
        _vjp_kernel(self.LU, self.nk, self.order, self.piv, self.singular, self.A_vals,
                    self.D_vals, L.D_rows, L.D_cols, self.X, self.Y, GX, GY, GS, L.A_rows,
                    L.A_cols, L.Ar_ptr, L.Ar_cols, L.Ar_pos, L.P_rows, L.P_cols, L.P_scale,
                    W, dA, dP)
        _check_finite("DT", members, self.singular, W, dA, dP)
        outs = [L.A_factory.build(dA), list(W[:, n:]), list(W[:, :n])]
        if return_dP:
            outs.append(L.P_factory.build(dP) if want_dP
                        else [sp.csc_matrix((n, n)) for _ in range(count)])
        fixed = self._apply_fallbacks("vjp", {
            i: ((dxs[i], dys[i], dss[i]), {"return_dP": return_dP}) for i in self.fallbacks})
        if progress is not None:
            progress(count)
        return self._scatter(outs, fixed)

    def jvp(self, dAs: Sequence, dbs: Sequence, dcs: Sequence, dPs: Sequence,
            progress: Callable[[int], Any] | None = None) -> tuple[list, ...]:
        """Apply every member's derivative: ``dxs, dys, dss`` (see :meth:`vjp`)."""
        L = self.layout
        m, n = L.m, L.n
        members = self.members
        count = members.size
        DC = _stack_vectors(dcs, members, "dc", n)
        DB = _stack_vectors(dbs, members, "db", m)
        if any(dAs[i] is not None for i in members):
            DAv = _stack_patterns(dAs, members, L.A_pattern, "dA")
        else:
            DAv = np.zeros((0, L.A_rows.size))
        if any(dPs[i] is not None for i in members):
            if L.quadratic is None:
                err = ValueError("dP was given but the problem has no P")
                tag_exception(err, next(int(i) for i in members if dPs[i] is not None))
                raise err
            DPv = _stack_patterns(dPs, members, L.P_pattern, "dP")
        else:
            DPv = np.zeros((0, L.P_rows.size))
        Z = np.empty((count, L.N))
        DY = np.empty((count, m))
        _jvp_kernel(self.LU, self.nk, self.order, self.piv, self.singular, self.A_vals,
                    self.D_vals, L.D_rows, L.D_cols, self.X, self.Y, DC, DB, DAv, L.A_rows,
                    L.A_cols, L.Ar_ptr, L.Ar_cols, L.Ar_pos, DPv, L.U_rows, L.U_cols, L.U_a,
                    L.U_b, L.U_weight, Z, DY)
        DS = DY - Z[:, n:]
        _check_finite("D", members, self.singular, Z, DY, DS)
        outs = [list(Z[:, :n]), list(DY), list(DS)]
        fixed = self._apply_fallbacks("jvp", {
            i: ((dAs[i], dbs[i], dcs[i]), {"dP": dPs[i]}) for i in self.fallbacks})
        if progress is not None:
            progress(count)
        return self._scatter(outs, fixed)

    def _scatter(self, outs: list[list], fixed: dict) -> tuple[list, ...]:
        """Per-member lists → per-batch-index lists (fallback results substituted)."""
        if self.members.size == self.size:
            lists = outs
        else:
            lists = [[None] * self.size for _ in outs]
            for k, i in enumerate(self.members):
                for lst, out in zip(lists, outs):
                    lst[i] = out[k]
        for i, result in fixed.items():
            for lst, value in zip(lists, result):
                lst[i] = value
        return tuple(lists)
