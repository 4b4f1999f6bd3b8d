"""A cvxpylayers JAX layer on diffqcp_np that works under ``jax.jit``, ``jax.vmap`` and
``jax.grad``.

cvxpylayers' own JAX layer keeps the backward pass's state in a Python closure, which
``jax.jit`` cannot trace (only its Moreau backend is jittable). :class:`CvxpyLayer` here is
the same layer (same constructor, same call, same outputs; a subclass of
``cvxpylayers.jax.CvxpyLayer``) whose solver call is a :func:`jax.custom_vjp` function of the
canonical value arrays, built on :func:`jax.pure_callback`:

* the forward callback solves the batch (one call of
  :func:`diffqcp_np.solve_and_derivative_batch`) and returns the solutions and a small
  integer *token*; the batch's derivative map is kept under the token in
  ``diffqcp_np.caches.layer_states`` (bounded, LRU);
* the backward callback gets the token and the cotangents as residuals and applies the kept
  adjoint. If the entry is gone (evicted, or caches cleared) it solves the residual problem
  data again and differentiates that, so the result never depends on the cache;
* both callbacks use ``vmap_method="broadcast_all"``: under :func:`jax.vmap` a call receives
  the whole vmapped batch at once, so a vmapped layer is one batch solve, not a Python loop;
* inputs of any floating dtype are solved in float64; outputs and gradients come back in the
  dtype of the layer's parameters (float32 parameters give float32 solutions).

Example::

    import jax, jax.numpy as jnp
    from diffqcp_np.jax_layer import CvxpyLayer

    layer = CvxpyLayer(problem, parameters=[A, b], variables=[x])   # DiffqcpSolver()
    loss = jax.jit(lambda A_, b_: layer(A_, b_)[0].sum())
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    batched = jax.jit(jax.vmap(grad, in_axes=(0, None)))             # one batch solve

The solver is a :class:`diffqcp_np.layers.DiffqcpSolver` (the default one if none is given);
``solver_args`` of a call are fixed when the call is traced. Importing this module needs JAX
and cvxpylayers >= 1.2.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from cvxpylayers.jax.cvxpylayer import CvxpyLayer as _CvxpyLayer
from cvxpylayers.jax.cvxpylayer import _recover_results

from . import caches
from .layers import DiffqcpSolver, LayerStructure

__all__ = ["CvxpyLayer"]

_COUNTER = itertools.count(1)
_COUNTER_LOCK = threading.Lock()


def _next_token() -> int:
    with _COUNTER_LOCK:
        return next(_COUNTER) % (2**31 - 1)


class _Canonical:
    """Converts between the layer's value arrays and batch-first float64 arrays.

    The layer hands its solver ``P`` ``(kP[, B])``, ``q`` ``(n + 1[, B])`` and ``A``
    ``(kA[, B])`` (``B``: cvxpylayers' batch, parameter-major); a vmapped callback gets
    leading axes ``L`` in front of those. Rows of the batch-first arrays run over ``L``
    then ``B``.
    """

    def __init__(self, batched: bool) -> None:
        self.batched = batched

    def rows(self, x: Optional[np.ndarray], lead: tuple) -> Optional[np.ndarray]:
        if x is None:
            return None
        x = np.asarray(x, dtype=np.float64)
        if self.batched:
            x = np.swapaxes(x, -1, -2)  # L + (B, k)
        else:
            x = x[..., None, :]  # L + (1, k)
        return x.reshape((-1, x.shape[-1]))

    def lead(self, q: np.ndarray) -> tuple:
        return tuple(q.shape[:-2] if self.batched else q.shape[:-1])

    def back(self, values: Optional[np.ndarray], lead: tuple, dtype) -> Optional[np.ndarray]:
        """Batch-first value rows ``(N, k)`` to the layer's layout ``L + (k[, B])``."""
        if values is None:
            return None
        k = values.shape[-1]
        values = values.reshape(lead + (-1, k))
        values = np.swapaxes(values, -1, -2) if self.batched else values[..., 0, :]
        return np.ascontiguousarray(values, dtype=dtype)


class CvxpyLayer(_CvxpyLayer):
    """``cvxpylayers.jax.CvxpyLayer`` on diffqcp_np, usable under ``jit``/``vmap``/``grad``.

    Parameters
    ----------
    problem, parameters, variables
        As for ``cvxpylayers.jax.CvxpyLayer``.
    solver : DiffqcpSolver, optional
        The diffqcp_np solver (default ``DiffqcpSolver()``); cvxpylayers' named solvers
        are not accepted here.
    **kwargs
        Other arguments of ``cvxpylayers.jax.CvxpyLayer`` (``gp``, ``verbose``, ...).
    """

    def __init__(self, problem, parameters, variables, solver: Any = None,
                 **kwargs: Any) -> None:
        if solver is None:
            solver = DiffqcpSolver()
        if not isinstance(solver, DiffqcpSolver):
            raise TypeError("solver must be a diffqcp_np.layers.DiffqcpSolver instance, got "
                            f"{type(solver).__name__}; for cvxpylayers' own solvers use "
                            "cvxpylayers.jax.CvxpyLayer")
        super().__init__(problem, parameters, variables, solver=solver, **kwargs)
        self._structure = solver._structure_for(self.ctx.cone_dims, self.ctx.q.shape[0],
                                                self.ctx.reduced_A.reduced_mat.shape[0])

    def __call__(self, *params: jnp.ndarray, solver_args: Optional[dict] = None,
                 warm_start: bool = False):
        """Solve for the parameters' values.

        Floating parameters are promoted to the dtype of the layer's canonical matrices
        (float64 with ``jax_enable_x64``) for the canonicalisation; the outputs, and so the
        gradients, come back in the parameters' own float dtype. ``warm_start=True`` starts
        the forward solve from the solutions of the layer's previous call with as many
        problems (the ``warm_start`` option of :class:`~diffqcp_np.layers.DiffqcpSolver`;
        under ``jax.jit`` it is fixed when the call is traced, and the solutions it starts
        from are the previous call's at run time).
        """
        if warm_start:
            solver_args = dict(solver_args or {}, warm_start=True)
        params = tuple(jnp.asarray(p) for p in params)
        floats = [p.dtype for p in params if jnp.issubdtype(p.dtype, jnp.floating)]
        if not floats:
            return super().__call__(*params, solver_args=solver_args)
        wide = self.q.data.dtype
        params = tuple(p.astype(wide) if jnp.issubdtype(p.dtype, jnp.floating) else p
                       for p in params)
        outputs = super().__call__(*params, solver_args=solver_args)
        dtype = jnp.result_type(*floats)
        return tuple(o.astype(dtype) for o in outputs)

    # -- the solver call: custom_vjp over pure callbacks --------------------------------------
    def _solve_with_custom_vjp(self, P_eval, q_eval, A_eval, batch, solver_args):
        solve = _make_solve(self.ctx.solver, self._structure, bool(batch),
                            dict(solver_args or {}), P_eval is not None)
        if P_eval is None:
            primal, dual = solve(q_eval, A_eval)
        else:
            primal, dual = solve(q_eval, A_eval, P_eval)
        return _recover_results(primal, dual, self.ctx, batch)


def _make_solve(solver: Any, structure: LayerStructure, batched: bool, solver_args: dict,
                has_P: bool):
    """The custom_vjp function ``(q, A[, P]) -> (primal, dual)`` for one call."""
    canon = _Canonical(batched)
    n, m = structure.n, structure.m

    def shapes(q):
        width = q.shape[-1] if batched else 1
        return (jax.ShapeDtypeStruct((width, n), q.dtype),
                jax.ShapeDtypeStruct((width, m), q.dtype))

    def solve_rows(q, A, P, needs_grad, cold=False):
        lead = canon.lead(q)
        args = dict(solver_args, warm_start=False) if cold else solver_args
        primal, dual, state = solver._solve(structure, canon.rows(P, lead), canon.rows(q, lead),
                                            canon.rows(A, lead), args, needs_grad)
        return lead, primal, dual, state

    def forward_callback(needs_grad, q, A, P=None):
        lead, primal, dual, state = solve_rows(q, A, P, needs_grad)
        rows = primal.shape[0]
        outs = [primal.reshape(lead + (-1, n)).astype(q.dtype),
                dual.reshape(lead + (-1, m)).astype(q.dtype)]
        if needs_grad:
            token = _next_token()
            caches.layer_states.put(token, state)
            blocks = int(np.prod(lead, dtype=np.int64))
            tokens = np.empty(lead + (2,), dtype=np.int32)
            tokens[..., 0] = token
            tokens[..., 1] = np.arange(blocks, dtype=np.int32).reshape(lead)
            assert rows % max(blocks, 1) == 0
            outs.append(tokens)
        return tuple(outs)

    def backward_callback(tokens, dprimal, ddual, q, A, P=None):
        lead = canon.lead(q)
        rows_per_block = q.shape[-1] if batched else 1
        dprimal = np.asarray(dprimal, dtype=np.float64).reshape(-1, n)
        ddual = np.asarray(ddual, dtype=np.float64).reshape(-1, m)
        tokens = np.asarray(tokens).reshape(-1, 2)
        state = caches.layer_states.get(int(tokens[0, 0])) if len(tokens) else None
        rows = (tokens[:, 1:2].astype(np.int64) * rows_per_block
                + np.arange(rows_per_block)).reshape(-1)
        if (state is None or np.any(tokens[:, 0] != tokens[0, 0])
                or len(np.unique(rows)) != len(rows) or rows.max(initial=-1) >= state.batch):
            # the kept derivative is gone or does not match: differentiate the residual data
            _, _, _, state = solve_rows(q, A, P, True, cold=True)
            rows = np.arange(state.batch)
        full_p = np.zeros((state.batch, n))
        full_d = np.zeros((state.batch, m))
        full_p[rows], full_d[rows] = dprimal, ddual
        dP, dq, dA = solver._derivative(full_p, full_d, state)
        outs = [canon.back(dq[rows], lead, q.dtype), canon.back(dA[rows], lead, A.dtype)]
        if P is not None:
            outs.append(canon.back(dP[rows], lead, P.dtype))
        return tuple(outs)

    def call(needs_grad, args):
        result = shapes(args[0])
        if needs_grad:
            result = result + (jax.ShapeDtypeStruct((2,), jnp.int32),)
        return jax.pure_callback(lambda *a: forward_callback(needs_grad, *a), result, *args,
                                 vmap_method="broadcast_all")

    @jax.custom_vjp
    def solve(*args):
        return call(False, args)

    def solve_fwd(*args):
        primal, dual, tokens = call(True, args)
        return (primal, dual), (tokens, args)

    def solve_bwd(residuals, cotangents):
        tokens, args = residuals
        dprimal, ddual = cotangents
        result = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args)
        return jax.pure_callback(backward_callback, result, tokens, dprimal, ddual, *args,
                                 vmap_method="broadcast_all")

    solve.defvjp(solve_fwd, solve_bwd)
    return solve
