"""diffqcp_np as the engine behind cvxpylayers.

Three ways to use it:

1. **Custom solver backend (cvxpylayers >= 1.2, tested with 1.2.0), quadratic objectives.**
   :class:`DiffqcpSolver` implements cvxpylayers' ``SolverInterface``
   (``cvxpylayers.interfaces.base``). CVXPY keeps the quadratic objective ``½ x'Px`` (it
   canonicalises in its ``quad_form_dpp_scope``), so parameters that enter ``P`` —
   ``cp.quad_form(w, Sigma)`` with ``Sigma`` a ``cp.Parameter((n, n), PSD=True)`` — are
   differentiable, which the ``DIFFCP`` backend cannot do (it rewrites ``P`` as a
   second-order cone and rejects a parametric ``P``)::

       import cvxpy as cp, torch
       from cvxpylayers.torch import CvxpyLayer
       from diffqcp_np.layers import DiffqcpSolver

       w = cp.Variable(n); Sigma = cp.Parameter((n, n), PSD=True); mu = cp.Parameter(n)
       problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(w, Sigma) - mu @ w),
                            [cp.sum(w) == 1, w >= 0])
       layer = CvxpyLayer(problem, parameters=[Sigma, mu], variables=[w],
                          solver=DiffqcpSolver())
       F = torch.randn(n, k, dtype=torch.float64, requires_grad=True)
       (w_star,) = layer(F @ F.T + 1e-3 * torch.eye(n), mu_t)   # gradients reach F

   The same instance works with ``cvxpylayers.jax.CvxpyLayer`` (``jax.grad``; not
   ``jax.jit``/``jax.vmap``, like every non-Moreau cvxpylayers backend: for those use
   :class:`diffqcp_np.jax_layer.CvxpyLayer`, the same layer built on
   ``jax.pure_callback``) and with batched
   parameters (a leading batch dimension): a batch is one call of
   :func:`diffqcp_np.solve_and_derivative_batch` (threads, one factorisation per problem).
   cvxpylayers 1.2's JAX layer does not dispatch ``SolverInterface`` objects itself
   (it reads ``ctx.solver_ctx``, which is ``None`` for custom solvers);
   :meth:`DiffqcpSolver.setup` fills that slot with a small adapter, so the stock JAX
   layer works unchanged.

   Options: ``DiffqcpSolver(solve_method=None, mode="direct", warm_start=False,
   **solver_args)``; ``solver_args`` (``eps``, ``tol_gap_abs``, ``max_iters``,
   ``n_jobs_forward``, ``n_jobs_backward``, ``backend``, ``derivative_kwargs``, ...) go to
   :func:`diffqcp_np.solve_and_derivative_batch`. The layer's per-call
   ``solver_args={...}`` override them. ``warm_start=True`` (or a call's
   ``solver_args={"warm_start": True}``) starts each call's forward solve from the
   solutions of the solver's previous call on the same layer and batch size, as a training
   loop wants; it needs a forward solver that takes warm starts (``"SCS"``, ``"IPM"``,
   ``"auto"``). ``DiffqcpSolver.last_info`` holds the last call's per-problem solver
   ``info`` (iterations, status). (cvxpylayers hands the ``solver_args`` given to
   ``CvxpyLayer(...)`` only to CVXPY's canonicalisation, not to a custom solver: give
   defaults to ``DiffqcpSolver`` instead.) The default forward solver
   (``solve_method=None``) is the batched interior-point method of
   :mod:`diffqcp_np.solvers.batched_ipm` (``"auto"``: one compiled solve of the whole
   batch) where it applies, small problems with zero and orthant cones only (LPs, QPs)
   on the CPU, and Clarabel otherwise: both interior-point methods, whose accurate
   solutions make accurate gradients. CVXPY canonicalises for SCS's data layout, which
   is diffqcp_np's, whatever the forward solver.

2. **The cvxpylayers 1.x DIFFCP backend on diffqcp_np.** Call
   :func:`diffqcp_np.install_as_diffcp` *before the first DIFFCP layer is constructed*
   (that is when cvxpylayers imports ``cvxpylayers.interfaces.diffcp_if``, which does
   ``import diffcp`` at its top). Importing ``cvxpy`` or ``cvxpylayers.torch`` /
   ``cvxpylayers.jax`` earlier is fine::

       import diffqcp_np
       diffqcp_np.install_as_diffcp()          # 1. first
       from cvxpylayers.torch import CvxpyLayer
       layer = CvxpyLayer(problem, parameters=[...], variables=[...])   # 2. DIFFCP

   If ``diffcp_if`` was imported before (a DIFFCP layer already exists), it keeps the real
   diffcp and ``install_as_diffcp`` warns; :func:`install_diffcp_backend` also rebinds
   the name ``diffcp`` inside that already-imported module. The DIFFCP backend hands a
   call's ``solver_args`` to :func:`diffqcp_np.solve_and_derivative_batch` unchanged, so
   ``layer(..., solver_args={"warm_starts": "previous"})`` warm-starts it from the last
   batch of the same structure and size (with SCS, the DIFFCP default solver).

3. **Legacy cvxpylayers 0.1.x** imports ``diffcp`` at the top of
   ``cvxpylayers.torch.cvxpylayer`` (and the JAX/TensorFlow twins): call
   ``install_as_diffcp()`` before ``from cvxpylayers.torch import CvxpyLayer``.

cvxpylayers, torch and jax are imported lazily: importing this module needs none of them
(``DiffqcpSolver`` is built on first access and needs cvxpylayers >= 1.2).

Data format (cvxpylayers' canonical-matrix ``SolverInterface`` path). For a batch of B
problems the layer passes ``P`` ``(B, nnz_P)`` (or ``None`` for a linear objective),
``q`` ``(B, n + 1)`` and ``A`` ``(B, nnz_A)``: the values of CVXPY's parametrised
matrices in the CSC order of ``ctx.reduced_P.problem_data_index`` and
``ctx.reduced_A.problem_data_index``. ``A`` holds ``[A_cvx | b]`` with constraints
``A_cvx x + b ∈ K``, so diffqcp_np's SCS-form data is ``A = -A_cvx`` and ``b``; ``P`` is
the full symmetric matrix of ``½ x'Px``; ``q[:-1]`` is ``c`` and ``q[-1]`` a constant
offset. The solver returns ``x`` ``(B, n)`` and the SCS-convention dual ``y``
``(B, m)``, and the backward pass returns the gradients with respect to those three
value arrays (``dq[:, -1] = 0``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import scipy.sparse as sp

from ._validation import as_real_array
from .solvers.base import CSCFactory

__all__ = ["DiffqcpSolver", "LayerStructure", "install_diffcp_backend"]  # noqa: F822 (lazy)

#: Forward solver used by :class:`DiffqcpSolver` unless told otherwise: None stands for
#: the batched interior-point method (``"auto"``) where it applies to the layer's problem
#: on the CPU, and :data:`DEFAULT_FALLBACK` otherwise (see :func:`default_solve_method`).
DEFAULT_SOLVE_METHOD = None
#: The default's forward solver where the batched interior-point method does not apply.
DEFAULT_FALLBACK = "Clarabel"
#: CVXPY solver whose canonicalisation (cone order, PSD vectorisation, exponential cone
#: coordinate order) matches diffqcp_np's SCS-form data.
CANON_SOLVER = "SCS"

# Options of solve_and_derivative_batch that solve_only_batch does not take.
_DERIVATIVE_ONLY = ("mode", "n_jobs_backward", "derivative_kwargs", "refine")
# Forward solvers that ignore warm starts (lower case).
_NO_WARM_START = ("clarabel", "ecos")


def _check_flag(value: Any, name: str) -> bool:
    """``value`` as a bool (True, False or a NumPy bool), else TypeError naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


# -- problem structure: CVXPY's parametrised patterns -> diffqcp_np's SCS-form data ------------
def _canonical_slots(rows: np.ndarray, cols: np.ndarray, shape: tuple):
    """Canonical CSC pattern (sorted, duplicates merged) of the entries (rows, cols).

    Returns ``(indices, indptr, slot)``: ``slot[k]`` is the position of entry ``k`` in
    the canonical pattern's data array.
    """
    nrows, ncols = shape
    keys = cols.astype(np.int64) * max(nrows, 1) + rows.astype(np.int64)
    unique, slot = np.unique(keys, return_inverse=True)
    u_cols, u_rows = np.divmod(unique, max(nrows, 1))
    indptr = np.zeros(ncols + 1, dtype=np.int64)
    np.add.at(indptr, u_cols + 1, 1)
    indptr = np.cumsum(indptr)
    return u_rows.astype(np.int32), indptr.astype(np.int32), slot.reshape(-1)


@dataclass
class LayerStructure:
    """Maps cvxpylayers' canonical value arrays to diffqcp_np problems and back.

    Built once per layer (in :meth:`DiffqcpSolver.setup`) from CVXPY's parametrised
    patterns. ``A`` is stored in canonical CSC order (duplicates merged), ``P`` as its
    upper triangle: both are fixed for the layer, so every batch has one structure.
    """

    n: int
    m: int
    cone_dict: dict
    nnz_A_aug: int  # length of cvxpylayers' A values ([A_cvx | b])
    nnz_P_cvx: int  # length of cvxpylayers' P values (0: no quadratic objective)
    A_indices: np.ndarray
    A_indptr: np.ndarray
    S_A: sp.csr_matrix  # (nnz_A, nnz_A_aug): A_scs.data = S_A @ values  (includes the sign)
    S_b: sp.csr_matrix  # (m, nnz_A_aug):     b = S_b @ values
    P_indices: Optional[np.ndarray] = None
    P_indptr: Optional[np.ndarray] = None
    S_P: Optional[sp.csr_matrix] = None  # (nnz_P_upper, nnz_P_cvx): upper(P).data = S_P @ P

    @classmethod
    def from_context(cls, ctx: Any) -> "LayerStructure":
        """Build from a cvxpylayers ``LayersContext``."""
        from cvxpy.reductions.solvers.conic_solvers.scs_conif import dims_to_solver_dict

        A_index = ctx.reduced_A.problem_data_index
        P_red = getattr(ctx, "reduced_P", None)
        P_index = getattr(P_red, "problem_data_index", None) if P_red is not None else None
        if getattr(P_red, "reduced_mat", None) is None:
            P_index = None
        n = int(ctx.q.shape[0]) - 1
        cone_dict = dims_to_solver_dict(ctx.cone_dims)
        return cls.from_patterns(A_index, P_index, n, cone_dict)

    @classmethod
    def from_patterns(cls, A_index, P_index, n: int, cone_dict: dict) -> "LayerStructure":
        """Build from CVXPY's ``problem_data_index`` triples ``(indices, indptr, shape)``."""
        indices, indptr, (m, ncols) = A_index
        indices, indptr = np.asarray(indices), np.asarray(indptr)
        m, ncols = int(m), int(ncols)
        if ncols != n + 1:
            raise ValueError(f"A has {ncols} columns; expected n + 1 = {n + 1} ([A | b])")
        nnz = int(indptr[-1])
        cols = np.repeat(np.arange(ncols), np.diff(indptr))
        rows = indices[:nnz]
        in_A = cols < n
        A_rows, A_cols = rows[in_A], cols[in_A]
        A_indices, A_indptr, slot = _canonical_slots(A_rows, A_cols, (m, n))
        positions = np.flatnonzero(in_A)
        S_A = sp.csr_matrix((-np.ones(len(positions)), (slot, positions)),
                            shape=(len(A_indices), nnz))
        b_pos = np.flatnonzero(~in_A)
        S_b = sp.csr_matrix((np.ones(len(b_pos)), (rows[b_pos], b_pos)), shape=(m, nnz))
        structure = cls(n=n, m=m, cone_dict=dict(cone_dict), nnz_A_aug=nnz, nnz_P_cvx=0,
                        A_indices=A_indices, A_indptr=A_indptr, S_A=S_A, S_b=S_b)
        if P_index is not None:
            p_indices, p_indptr, (pn, pn2) = P_index
            p_indices, p_indptr = np.asarray(p_indices), np.asarray(p_indptr)
            if int(pn) != n or int(pn2) != n:
                raise ValueError(f"P has shape {(pn, pn2)}; expected {(n, n)}")
            p_nnz = int(p_indptr[-1])
            p_cols = np.repeat(np.arange(n), np.diff(p_indptr))
            p_rows = p_indices[:p_nnz]
            # CVXPY's P is the full matrix of ½ x'Px: its symmetric part has
            # (P_ij + P_ji)/2 off the diagonal, stored once in the upper triangle.
            lo, hi = np.minimum(p_rows, p_cols), np.maximum(p_rows, p_cols)
            U_indices, U_indptr, u_slot = _canonical_slots(lo, hi, (n, n))
            weights = np.where(p_rows == p_cols, 1.0, 0.5)
            structure.P_indices, structure.P_indptr = U_indices, U_indptr
            structure.S_P = sp.csr_matrix((weights, (u_slot, np.arange(p_nnz))),
                                          shape=(len(U_indices), p_nnz))
            structure.nnz_P_cvx = p_nnz
        return structure

    # -- forward: values -> problems --------------------------------------------------------
    def problems(self, P: Optional[np.ndarray], q: np.ndarray, A: np.ndarray):
        """Lists ``As, bs, cs, Ps`` for batch-first value arrays (``Ps`` None without P)."""
        self._check_values(P, q, A)
        A_data = np.ascontiguousarray((self.S_A @ A.T).T)  # (B, nnz_A)
        b = np.ascontiguousarray((self.S_b @ A.T).T)  # (B, m)
        As = self._factory("A").shared(A_data)  # one pattern: shared read-only indices
        bs = list(b)
        cs = list(np.ascontiguousarray(q[:, :-1]))
        Ps = None
        if self.S_P is not None:
            if P is None:
                raise ValueError("the layer has a quadratic objective but no P values came")
            Ps = self._factory("P").shared(np.ascontiguousarray((self.S_P @ P.T).T))
        return As, bs, cs, Ps

    def _factory(self, name: str) -> CSCFactory:
        """The :class:`~diffqcp_np.solvers.base.CSCFactory` of ``A``'s or ``P``'s
        pattern (made on first use)."""
        factories = self.__dict__.setdefault("_factories", {})
        if name not in factories:
            factories[name] = (
                CSCFactory(self.A_indices, self.A_indptr, (self.m, self.n)) if name == "A"
                else CSCFactory(self.P_indices, self.P_indptr, (self.n, self.n)))
        return factories[name]

    def _check_values(self, P, q, A) -> None:
        if q.ndim != 2 or q.shape[1] != self.n + 1:
            raise ValueError(f"q values have shape {q.shape}; expected (B, {self.n + 1})")
        if A.shape != (q.shape[0], self.nnz_A_aug):
            raise ValueError(f"A values have shape {A.shape}; "
                             f"expected ({q.shape[0]}, {self.nnz_A_aug})")
        if P is not None and self.S_P is not None and P.shape != (q.shape[0], self.nnz_P_cvx):
            raise ValueError(f"P values have shape {P.shape}; "
                             f"expected ({q.shape[0]}, {self.nnz_P_cvx})")

    # -- backward: gradients on problems -> gradients on values -------------------------------
    def _pattern_values(self, M, indices, indptr, shape) -> np.ndarray:
        M = sp.csc_matrix(M)
        if (M.shape == shape and len(M.indices) == len(indices)
                and np.array_equal(M.indptr, indptr) and np.array_equal(M.indices, indices)):
            return np.asarray(M.data, dtype=float)
        cols = np.repeat(np.arange(shape[1]), np.diff(indptr))
        return np.asarray(M[indices, cols], dtype=float).reshape(-1)

    def _stacked_pattern_values(self, mats, indices, indptr, shape) -> np.ndarray:
        """The values of every matrix on the pattern ``(indices, indptr)``, stacked: the
        ``data`` arrays as they are where every matrix is CSC on exactly that pattern (as
        ``DT`` returns them), else matrix by matrix."""
        from .batch.structure import all_on_pattern

        if all_on_pattern(mats, indices, indptr, shape):
            return np.stack([np.asarray(M.data, dtype=float) for M in mats])
        return np.stack([self._pattern_values(M, indices, indptr, shape) for M in mats])

    def value_gradients(self, dAs, dbs, dcs, dPs, has_P: bool):
        """``(dP, dq, dA)`` batch-first value gradients from diffqcp_np's ``DT`` output."""
        dA_data = self._stacked_pattern_values(dAs, self.A_indices, self.A_indptr,
                                               (self.m, self.n))
        db = np.stack([np.asarray(d, dtype=float) for d in dbs])
        dc = np.stack([np.asarray(d, dtype=float) for d in dcs])
        dP_data = None
        if has_P and self.S_P is not None:
            dP_data = self._stacked_pattern_values(dPs, self.P_indices, self.P_indptr,
                                                   (self.n, self.n))
        return self.stacked_gradients(dA_data, db, dc, dP_data, np, lambda matrix: matrix)

    def stacked_gradients(self, dA_data, db, dc, dP_data, xp, sparse):
        """``(dP, dq, dA)`` value gradients from stacked gradients on the problems' data
        (``dA``, ``dP`` as values on the stored patterns, ``(B, nnz)``), on the array
        namespace ``xp`` (``sparse``: a SciPy matrix as one of ``xp``'s, kept per
        namespace)."""
        key = getattr(xp, "__name__", repr(xp))
        matrices = self.__dict__.setdefault("_on", {})
        if key not in matrices:
            matrices[key] = tuple(None if S is None else sparse(S)
                                  for S in (self.S_A, self.S_b, self.S_P))
        S_A, S_b, S_P = matrices[key]
        dA_vals = (S_A.T @ dA_data.T + S_b.T @ db.T).T
        dq = xp.concat([dc, xp.zeros((dc.shape[0], 1))], axis=1)
        dP_vals = None if dP_data is None or S_P is None else (S_P.T @ dP_data.T).T
        return dP_vals, dq, dA_vals


@dataclass
class _BatchState:
    """What the backward pass of one layer call needs (``engine``: the device path's,
    None on the CPU)."""

    structure: LayerStructure
    DT: Any
    batch: int
    has_P: bool
    engine: Any = None


@functools.lru_cache(maxsize=1)
def _not_solver_settings() -> frozenset[str]:
    """The call options that are not the forward solver's settings: the parameters of
    :func:`~diffqcp_np.batch.solve_and_derivative_batch`, the options it pops from its
    keywords, and the layer's ``warm_start``."""
    import inspect

    from .batch import solve_and_derivative_batch

    return (frozenset(inspect.signature(solve_and_derivative_batch).parameters)
            | {"derivative_kwargs", "solve_method", "warm_start"})


def default_solve_method(structure: LayerStructure, options: dict, on_device: bool) -> str:
    """The forward solver of a call that names none: ``"auto"`` (the batched
    interior-point method, with Clarabel for members it fails on) where
    :func:`~diffqcp_np.solvers.batched_ipm.applies` to the layer's problem and the call's
    solver settings and the call runs on the CPU, else :data:`DEFAULT_FALLBACK`.

    ``options`` are the call's options (the layer's ``warm_start`` and those of
    :func:`~diffqcp_np.batch.solve_and_derivative_batch`): those that are not the batch
    function's own parameters are the forward solver's settings.
    """
    from .cones import as_cone_spec
    from .solvers import batched_ipm

    settings = {k: v for k, v in options.items() if k not in _not_solver_settings()}
    spec = as_cone_spec(structure.cone_dict)
    if not on_device and batched_ipm.applies(spec, (structure.m, structure.n), settings):
        return "auto"
    return DEFAULT_FALLBACK


def _unwrap_state(state: Any) -> _BatchState:
    while isinstance(state, (list, tuple)) and len(state) == 1:
        state = state[0]
    if not isinstance(state, _BatchState):
        raise TypeError(
            "diffqcp_np's backward pass got a state it did not make "
            f"({type(state).__name__}); was the forward pass run with needs_grad=False?"
        )
    return state


class _DiffqcpSolverImpl:
    """The solver's behaviour; :class:`DiffqcpSolver` mixes it into ``SolverInterface``."""

    canon_solver = CANON_SOLVER
    supports_quad_obj = True
    is_parametric = False

    def __init__(self, solve_method: str | None = DEFAULT_SOLVE_METHOD, mode: str = "direct",
                 warm_start: bool = False, **solver_args: Any) -> None:
        self.solver_args = dict(solve_method=solve_method, mode=mode, **solver_args)
        self.warm_start = _check_flag(warm_start, "warm_start")
        self.last_info: list[dict] = []
        self._structures: dict[int, tuple[Any, LayerStructure]] = {}
        # id(structure) -> (structure, [(x, y, s) or None per problem]) of the last call
        self._last_solutions: dict[int, tuple[LayerStructure, list]] = {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.solver_args.items())
        if self.warm_start:
            args += ", warm_start=True"
        return f"DiffqcpSolver({args})"

    # -- cvxpylayers hooks ---------------------------------------------------------------
    def setup(self, ctx: Any) -> None:
        """Called by ``CvxpyLayer.__init__``: read the problem's patterns once.

        Also gives cvxpylayers' JAX layer (which looks for ``ctx.solver_ctx``) an adapter
        that routes its calls to this solver.
        """
        structure = LayerStructure.from_context(ctx)
        self._structures[id(ctx.cone_dims)] = (ctx.cone_dims, structure)
        if getattr(ctx, "solver_ctx", None) is None:
            ctx.solver_ctx = _JaxSolverContext(self, structure)

    def set_params(self, params: list) -> None:  # noqa: D401 - cvxpylayers hook
        """Not needed: diffqcp_np works on the canonical matrices."""

    def _structure_for(self, dims: Any, q_width: int, A_width: int) -> LayerStructure:
        entry = self._structures.get(id(dims))
        if entry is not None and entry[0] is dims:
            return entry[1]
        # A copied layer (copy.deepcopy) has new ids: match by size and cones.
        from cvxpy.reductions.solvers.conic_solvers.scs_conif import dims_to_solver_dict

        try:
            cones = dims_to_solver_dict(dims) if not isinstance(dims, dict) else dict(dims)
        except Exception:
            cones = None
        matches = {id(s): s for _, s in self._structures.values()
                   if s.n + 1 == q_width and s.nnz_A_aug == A_width
                   and (cones is None or s.cone_dict == cones)}
        if len(matches) == 1:
            return next(iter(matches.values()))
        if not matches:
            raise RuntimeError(
                "DiffqcpSolver was not set up for this problem: pass the instance as "
                "CvxpyLayer(..., solver=DiffqcpSolver()) so that the layer calls setup()"
            )
        raise RuntimeError(
            "one DiffqcpSolver instance serves several layers whose problems it cannot tell "
            "apart; give each layer its own DiffqcpSolver()"
        )

    # -- core (numpy, batch first) ----------------------------------------------------------
    def _options(self, solver_args: Optional[dict]) -> dict:
        options = dict(self.solver_args, warm_start=self.warm_start)
        if solver_args:
            options.update(solver_args)
        return options

    def _warm_starts(self, structure: LayerStructure, options: dict, count: int,
                     device: Any) -> Any:
        """The ``warm_starts`` of a call: the user's, or with the ``warm_start`` option the
        solutions of this solver's last call on ``structure`` if it had ``count`` problems
        (None otherwise: a cold start)."""
        warm = _check_flag(options.pop("warm_start"), "warm_start")
        if not warm:
            return options.pop("warm_starts", None)
        if "warm_starts" in options:
            raise ValueError("warm_start=True and warm_starts were both given; pass one")
        method = str(options.get("solve_method")).lower()
        if method in _NO_WARM_START:
            raise ValueError(f"warm_start=True needs a forward solver that takes warm starts "
                             f"(SCS, IPM or auto); {options.get('solve_method')} has none")
        if device is not None:
            raise ValueError("warm_start=True is not available on the device path")
        entry = self._last_solutions.get(id(structure))
        if entry is None or entry[0] is not structure or len(entry[1]) != count:
            return None
        return entry[1]

    def _remember(self, structure: LayerStructure, xs, ys, ss, infos) -> None:
        """Keep a CPU call's solutions (for ``warm_start``: None where one is not
        finite) and infos (``last_info``)."""
        finite = np.ones(len(xs), dtype=bool)
        for vectors in (xs, ys, ss):
            finite &= np.isfinite(np.stack(vectors)).all(axis=1)
        solutions = [(x, y, s) if ok else None
                     for x, y, s, ok in zip(xs, ys, ss, finite.tolist())]
        self._last_solutions[id(structure)] = (structure, solutions)
        self.last_info = list(infos)

    def _solve(self, structure: LayerStructure, P, q, A, solver_args, needs_grad: bool,
               like: Any = None):
        """Solutions ``(B, n)``, duals ``(B, m)`` and the backward state. With the device
        path (the ``device`` option, or ``like``, the layer's tensor, on a CUDA device:
        :func:`~diffqcp_np.gpu.interop.device_for`) the derivatives are set up on the
        device and the solutions returned as arrays of its engine."""
        from . import batch as _batch

        q = as_real_array(q, "q")
        A = as_real_array(A, "A")
        P = None if P is None else as_real_array(P, "P")
        As, bs, cs, Ps = structure.problems(P, q, A)
        options = self._options(solver_args)
        device = options.pop("device", None)
        if device is not None or like is not None:
            from .gpu.interop import device_for

            device = device_for(device, like)
        if options.get("solve_method") is None:
            options["solve_method"] = default_solve_method(structure, options,
                                                           device is not None)
        cones = [structure.cone_dict] * len(cs)
        options["warm_starts"] = self._warm_starts(structure, options, len(cs), device)
        options["return_info"] = True
        if needs_grad:
            xs, ys, ss, _, DT, infos = _batch.solve_and_derivative_batch(
                As, bs, cs, cones, Ps=Ps, device=device, **options)
            if device == "cuda":
                from .gpu import engine as engines

                engine = engines.current()
                self.last_info = list(infos)
                return (engine.xp.stack(xs), engine.xp.stack(ys),
                        _BatchState(structure, DT, len(cs), Ps is not None, engine))
            state = _BatchState(structure, DT, len(cs), Ps is not None)
        else:
            for key in _DERIVATIVE_ONLY:
                options.pop(key, None)
            xs, ys, ss, infos = _batch.solve_only_batch(As, bs, cs, cones, Ps=Ps, **options)
            state = None
        self._remember(structure, xs, ys, ss, infos)
        primal = np.stack([np.asarray(x, dtype=np.float64) for x in xs])
        dual = np.stack([np.asarray(y, dtype=np.float64) for y in ys])
        return primal, dual, state

    @staticmethod
    def _device_derivative(dprimal, ddual, state: _BatchState):
        """``(dP, dq, dA)`` on the device path: cotangents and gradients on its engine
        (one batched VJP where the batch has one structure and no failed problem)."""
        engine, structure = state.engine, state.structure
        xp = engine.xp
        dprimal = xp.reshape(xp.astype(dprimal, xp.float64), (state.batch, structure.n))
        ddual = xp.reshape(xp.astype(ddual, xp.float64), (state.batch, structure.m))
        batch = state.DT.device_batch
        if batch is not None:
            dA, db, dc, dP = batch.vjp(dprimal, ddual, None)
        else:
            out = state.DT(list(dprimal), list(ddual), None, return_dP=state.has_P)
            dA = xp.stack([a.data for a in out[0]])
            db, dc = xp.stack(out[1]), xp.stack(out[2])
            dP = xp.stack([p.data for p in out[3]]) if state.has_P else None
        return structure.stacked_gradients(dA, db, dc, dP if state.has_P else None, xp,
                                           engine.from_scipy)

    @staticmethod
    def _derivative(dprimal, ddual, saved_state):
        state = _unwrap_state(saved_state)
        structure = state.structure
        dprimal = as_real_array(dprimal, "dprimal").reshape(state.batch, structure.n)
        ddual = as_real_array(ddual, "ddual").reshape(state.batch, structure.m)
        dss = [np.zeros(structure.m) for _ in range(state.batch)]
        out = state.DT(list(dprimal), list(ddual), dss, return_dP=state.has_P)
        dAs, dbs, dcs = out[:3]
        dPs = out[3] if state.has_P else None
        return structure.value_gradients(dAs, dbs, dcs, dPs, state.has_P)

    # -- SolverInterface: numpy ------------------------------------------------------------
    def solve_numpy_batch(self, P, q, A, dims, solver_args, needs_grad):
        structure = self._structure_for(dims, q.shape[-1], A.shape[-1])
        return self._solve(structure, P, q, A, solver_args, needs_grad)

    def derivative_numpy_batch(self, dprimal, ddual, saved_state):
        return self._derivative(dprimal, ddual, saved_state)

    def solve_numpy(self, P, q, A, dims, solver_args, needs_grad):
        primal, dual, state = self.solve_numpy_batch(
            None if P is None else np.asarray(P)[None], np.asarray(q)[None],
            np.asarray(A)[None], dims, solver_args, needs_grad)
        return primal[0], dual[0], state

    def derivative_numpy(self, dprimal, ddual, saved_state):
        dP, dq, dA = self._derivative(np.asarray(dprimal)[None], np.asarray(ddual)[None],
                                      saved_state)
        return (None if dP is None else dP[0]), dq[0], dA[0]

    # -- SolverInterface: torch ------------------------------------------------------------
    def solve_torch_batch(self, P, q, A, dims, solver_args, needs_grad):
        import torch

        def to_np(t):
            return None if t is None else t.detach().cpu().numpy()

        structure = self._structure_for(dims, q.shape[-1], A.shape[-1])
        primal, dual, state = self._solve(structure, to_np(P), to_np(q), to_np(A),
                                          solver_args, needs_grad, like=q)
        if state is not None:
            state.torch_like = (q.dtype, q.device,
                                None if P is None else P.dtype, A.dtype)
            if state.engine is not None:
                from .gpu.interop import to_torch

                return (to_torch(primal, q.dtype, q.device),
                        to_torch(dual, q.dtype, q.device), state)
        return (torch.from_numpy(primal).to(dtype=q.dtype, device=q.device),
                torch.from_numpy(dual).to(dtype=q.dtype, device=q.device), state)

    def derivative_torch_batch(self, dprimal, ddual, saved_state):
        import torch

        state = _unwrap_state(saved_state)
        q_dtype, device, P_dtype, A_dtype = getattr(
            state, "torch_like", (dprimal.dtype, dprimal.device, dprimal.dtype, dprimal.dtype))
        if state.engine is not None:
            from .gpu.interop import from_framework, to_torch

            dP, dq, dA = self._device_derivative(from_framework(dprimal, state.engine),
                                                 from_framework(ddual, state.engine), state)
            return (None if dP is None else to_torch(dP, P_dtype or q_dtype, device),
                    to_torch(dq, q_dtype, device), to_torch(dA, A_dtype, device))
        dP, dq, dA = self._derivative(dprimal.detach().cpu().numpy(),
                                      ddual.detach().cpu().numpy(), state)
        return (None if dP is None
                else torch.from_numpy(dP).to(dtype=P_dtype or q_dtype, device=device),
                torch.from_numpy(dq).to(dtype=q_dtype, device=device),
                torch.from_numpy(dA).to(dtype=A_dtype, device=device))

    def solve_torch(self, P, q, A, dims, solver_args, needs_grad):
        primal, dual, state = self.solve_torch_batch(
            None if P is None else P.unsqueeze(0), q.unsqueeze(0), A.unsqueeze(0), dims,
            solver_args, needs_grad)
        return primal[0], dual[0], state

    def derivative_torch(self, dprimal, ddual, saved_state):
        dP, dq, dA = self.derivative_torch_batch(dprimal.unsqueeze(0), ddual.unsqueeze(0),
                                                 saved_state)
        return (None if dP is None else dP[0]), dq[0], dA[0]

    # -- SolverInterface: JAX --------------------------------------------------------------
    def solve_jax_batch(self, P, q, A, dims, solver_args, needs_grad):
        import jax.numpy as jnp

        structure = self._structure_for(dims, q.shape[-1], A.shape[-1])
        primal, dual, state = self._solve(
            structure, None if P is None else np.asarray(P), np.asarray(q), np.asarray(A),
            solver_args, needs_grad, like=q)
        if state is not None:
            state.jax_like = (q.dtype, None if P is None else P.dtype, A.dtype)
            if state.engine is not None:
                from .gpu.interop import to_jax

                return to_jax(primal, q.dtype), to_jax(dual, q.dtype), state
        return jnp.asarray(primal, dtype=q.dtype), jnp.asarray(dual, dtype=q.dtype), state

    def derivative_jax_batch(self, dprimal, ddual, saved_state):
        import jax.numpy as jnp

        state = _unwrap_state(saved_state)
        q_dtype, P_dtype, A_dtype = getattr(
            state, "jax_like", (dprimal.dtype, dprimal.dtype, dprimal.dtype))
        if state.engine is not None:
            from .gpu.interop import from_framework, to_jax

            dP, dq, dA = self._device_derivative(from_framework(dprimal, state.engine),
                                                 from_framework(ddual, state.engine), state)
            return (None if dP is None else to_jax(dP, P_dtype or q_dtype),
                    to_jax(dq, q_dtype), to_jax(dA, A_dtype))
        dP, dq, dA = self._derivative(np.asarray(dprimal), np.asarray(ddual), state)
        return (None if dP is None else jnp.asarray(dP, dtype=P_dtype or q_dtype),
                jnp.asarray(dq, dtype=q_dtype), jnp.asarray(dA, dtype=A_dtype))

    def solve_jax(self, P, q, A, dims, solver_args, needs_grad):
        primal, dual, state = self.solve_jax_batch(
            None if P is None else P[None], q[None], A[None], dims, solver_args, needs_grad)
        return primal[0], dual[0], state

    def derivative_jax(self, dprimal, ddual, saved_state):
        dP, dq, dA = self.derivative_jax_batch(dprimal[None], ddual[None], saved_state)
        return (None if dP is None else dP[0]), dq[0], dA[0]


# -- cvxpylayers' JAX layer: the solver_ctx protocol it calls ----------------------------------
class _JaxSolverContext:
    """What ``cvxpylayers.jax.CvxpyLayer`` calls for non-Moreau solvers (``jax_to_data``).

    Value arrays arrive parameter-major: ``(k,)`` unbatched or ``(k, B)`` batched.
    """

    def __init__(self, solver: _DiffqcpSolverImpl, structure: LayerStructure) -> None:
        self.solver = solver
        self.structure = structure

    def jax_to_data(self, quad_obj_values, lin_obj_values, con_values) -> "_JaxData":
        return _JaxData(self, quad_obj_values, lin_obj_values, con_values)


class _JaxData:
    def __init__(self, context: _JaxSolverContext, P, q, A) -> None:
        self.solver = context.solver
        self.structure = context.structure
        self.unbatched = np.ndim(q) == 1
        self.dtypes = (None if P is None else P.dtype, q.dtype, A.dtype)
        self.like = q  # where the layer's arrays live (the device path follows it)

        def batch_first(x):
            if x is None:
                return None
            x = np.asarray(x, dtype=np.float64)
            return x[None] if self.unbatched else x.T

        self.P, self.q, self.A = batch_first(P), batch_first(q), batch_first(A)

    def _run(self, solver_args, needs_grad: bool):
        import jax.numpy as jnp

        primal, dual, state = self.solver._solve(self.structure, self.P, self.q, self.A,
                                                 solver_args, needs_grad, like=self.like)
        dtype = self.dtypes[1]
        if state is not None and state.engine is not None:
            from .gpu.interop import to_jax

            return to_jax(primal, dtype), to_jax(dual, dtype), state
        return jnp.asarray(primal, dtype=dtype), jnp.asarray(dual, dtype=dtype), state

    def jax_solve(self, solver_args=None):
        return self._run(solver_args, True)

    def jax_solve_only(self, solver_args=None):
        primal, dual, _ = self._run(solver_args, False)
        return primal, dual

    def jax_derivative(self, dprimal, ddual, state):
        import jax.numpy as jnp

        engine = _unwrap_state(state).engine
        if engine is not None:
            from .gpu.interop import from_framework, to_jax

            dP, dq, dA = self.solver._device_derivative(
                from_framework(dprimal, engine), from_framework(ddual, engine),
                _unwrap_state(state))
            convert = to_jax
        else:
            dP, dq, dA = self.solver._derivative(np.asarray(dprimal), np.asarray(ddual),
                                                 state)
            convert = jnp.asarray

        def layer_layout(x, dtype):
            if x is None or dtype is None:
                return None
            x = x[0] if self.unbatched else x.T
            return convert(x, dtype=dtype)

        P_dtype, q_dtype, A_dtype = self.dtypes
        return layer_layout(dP, P_dtype), layer_layout(dq, q_dtype), layer_layout(dA, A_dtype)


# -- lazy construction of the SolverInterface subclass ------------------------------------------
_solver_class = None


def _build_solver_class():
    global _solver_class
    if _solver_class is None:
        try:
            from cvxpylayers.interfaces.base import SolverInterface
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "diffqcp_np.layers.DiffqcpSolver needs cvxpylayers >= 1.2 (its "
                "SolverInterface): pip install 'diffqcp_np[layers]'"
            ) from exc

        class DiffqcpSolver(_DiffqcpSolverImpl, SolverInterface):
            """cvxpylayers ``SolverInterface`` backed by diffqcp_np (quadratic objectives).

            Parameters
            ----------
            solve_method : {None, "auto", "IPM", "Clarabel", "SCS", "ECOS"}, default None
                Forward solver. None: ``"auto"`` where the batched interior-point method
                applies to the layer's problem on the CPU (zero and orthant cones,
                small), else Clarabel (see :func:`default_solve_method`); ``"auto"`` by
                name falls back to SCS instead, as the batch functions do.
            mode : str, default "direct"
                Derivative mode of :func:`diffqcp_np.solve_and_derivative_batch`.
            warm_start : bool, default False
                Start each forward solve from this solver's solutions of its last call on
                the same layer, where that call had as many problems (a training loop's
                steps); otherwise solve cold. Needs a forward solver that takes warm
                starts (``"SCS"``, ``"IPM"`` or ``"auto"``: ValueError for Clarabel and
                ECOS). A call's ``solver_args={"warm_start": ...}`` overrides it.
            **solver_args
                Defaults for every call (forward-solver settings such as ``eps`` or
                ``tol_gap_abs``, and batch options such as ``n_jobs_forward``); the
                layer's per-call ``solver_args`` override them.

            Attributes
            ----------
            last_info : list of dict
                The forward solver's ``info`` per problem of the last call (``"iter"``,
                ``"status"``, ``"refinement"``, ...).
            """

        DiffqcpSolver.__module__ = __name__
        DiffqcpSolver.__qualname__ = "DiffqcpSolver"
        _solver_class = DiffqcpSolver
    return _solver_class


def __getattr__(name: str):
    if name == "DiffqcpSolver":
        return _build_solver_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the DIFFCP backend ---------------------------------------------------------------------------
#: cvxpylayers modules that hold a global ``diffcp`` (1.x DIFFCP backend; 0.1.x layers).
_DIFFCP_USERS = ("cvxpylayers.interfaces.diffcp_if", "cvxpylayers.torch.cvxpylayer",
                 "cvxpylayers.jax.cvxpylayer", "cvxpylayers.tensorflow.cvxpylayer")

def install_diffcp_backend(warn: bool = True):
    """Run cvxpylayers' ``DIFFCP`` backend (1.x) and legacy 0.1.x layers on diffqcp_np.

    Calls :func:`diffqcp_np.install_as_diffcp` and, where a cvxpylayers module that uses
    diffcp was imported before (``cvxpylayers.interfaces.diffcp_if`` in 1.x,
    ``cvxpylayers.{torch,jax,tensorflow}.cvxpylayer`` in 0.1.x), rebinds its global
    ``diffcp`` to diffqcp_np too. Returns the handle of ``install_as_diffcp``; its
    ``uninstall()`` restores ``sys.modules``, and the rebound modules get the real diffcp
    back when the returned handle's ``uninstall`` is called.
    """
    import sys
    import warnings

    from . import compat

    package = sys.modules[__name__.rpartition(".")[0]]
    handle = compat.install_as_diffcp(warn=False)
    rebound = {}
    for name in _DIFFCP_USERS:
        module = sys.modules.get(name)
        old = None if module is None else module.__dict__.get("diffcp")
        if old is not None and old is not package:
            rebound[name] = old
            module.diffcp = package
    others = [s for s in getattr(handle, "stale_references", []) if s not in rebound]
    if warn and others:
        warnings.warn(
            "diffqcp_np is now registered as 'diffcp', but these modules imported the real "
            f"diffcp earlier and keep using it: {', '.join(others)}.",
            RuntimeWarning, stacklevel=2)
    if rebound:
        original_uninstall = handle.uninstall

        def uninstall() -> None:
            for name, old in rebound.items():
                module = sys.modules.get(name)
                if module is not None and module.__dict__.get("diffcp") is package:
                    module.diffcp = old
            rebound.clear()
            original_uninstall()

        handle.uninstall = uninstall
    return handle
