"""Derivatives of a batch of small same-structure problems, dense, on an array namespace.

For ``B`` problems that share one cone product and the patterns of ``A`` and ``P``
(values ``(B, nnz)``), everything per problem is a vector operation over the batch:
the cone blocks (:func:`.cones.jacobian_parts`, kernels), the values of ``M`` and ``K``
(one gather each, :mod:`.assembly`), their dense forms, the LDLᵀ of the regularised M
(:mod:`.dense`), solves with ``K`` or ``K'`` through M refined against the exact ``K``
(:mod:`.refine`), and the JVP/VJP formulas of :class:`~diffqcp_np.derivative.
SolutionDerivative`. Every row of D is kept (a pattern that does not depend on the
solution); second-order cones are never lifted here.

With ``xp = cupy`` and :class:`~._modules.DeviceKernels` this is the GPU's batched dense
path; the tests run it with NumPy and the host build of the kernels against the CPU
derivative.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import array_module
from ..cones.spec import ConeSpec
from . import dense
from .assembly import (
    GatherMap,
    MatrixMap,
    ReducedMatrixMap,
    kkt_matrix_map,
    reduced_matrix_map,
    sources,
)
from .cones import jacobian_parts
from .layout import BlockLayout
from .refine import refined_solve

#: Static regularisation of M relative to ``max(1, max |M_ij|)`` (the CPU's first).
REGULARIZATION = 1e-9


def launch_gather(kernels: Any, src: Any, gather_map: GatherMap, arrays: dict, xp: Any) -> Any:
    """The ``gather_values`` kernel's values ``(B, nnz)`` for sources ``(B, ·)``
    (``arrays``: the map's index arrays on ``xp``)."""
    batch = src.shape[0]
    out = xp.empty(batch * gather_map.nnz)
    kernels.gather_values(xp.reshape(src, (-1,)), gather_map.sources, arrays["term_ptr"],
                          arrays["left"], arrays["right"], arrays["weight"], gather_map.nnz,
                          batch, out)
    return xp.reshape(out, (batch, gather_map.nnz))


def _pattern_entries(pattern: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    indptr, indices = pattern
    return indices.astype(np.int64), np.repeat(np.arange(indptr.size - 1), np.diff(indptr))


@dataclass(frozen=True)
class DenseStructure:
    """What a batch's problems share: cones, patterns, gather maps, dense positions.

    Build with :meth:`build`; arrays are host (NumPy) arrays, copied to a namespace once
    by :meth:`on`.
    """

    spec: ConeSpec
    n: int
    layout: BlockLayout
    M: ReducedMatrixMap
    K: MatrixMap
    A_entries: tuple[np.ndarray, np.ndarray]
    P_entries: tuple[np.ndarray, np.ndarray] | None

    @classmethod
    def build(cls, spec: ConeSpec, n: int, A_pattern: tuple[np.ndarray, np.ndarray],
              P_pattern: tuple[np.ndarray, np.ndarray] | None) -> DenseStructure:
        """The structure of problems with cones ``spec``, ``n`` variables and the CSC
        patterns ``(indptr, indices)`` of ``A`` and of the full symmetric ``P`` (or
        None)."""
        layout = BlockLayout.from_spec(spec, max(spec.soc, default=0))
        return cls(spec, n, layout, reduced_matrix_map(n, P_pattern, A_pattern, layout),
                   kkt_matrix_map(n, P_pattern, A_pattern, layout),
                   _pattern_entries(A_pattern),
                   None if P_pattern is None else _pattern_entries(P_pattern))

    @property
    def m(self) -> int:
        return self.layout.m

    @functools.cached_property
    def _host(self) -> dict[str, np.ndarray]:
        m, n, S = self.m, self.n, self.layout.size
        D_index = np.full(m * m, S, np.int64)
        D_index[self.layout.rows * m + self.layout.cols] = self.layout.storage
        A_rows, A_cols = self.A_entries
        A_index = np.full(m * n, A_rows.size, np.int64)
        A_index[A_rows * n + A_cols] = np.arange(A_rows.size)
        out = {"M_dense": self.M.dense_index(True), "K_dense": self.K.dense_index(False),
               "M_signs": self.M.signs, "D_dense": D_index, "A_dense": A_index,
               "A_rows": A_rows, "A_cols": A_cols}
        if self.P_entries is not None:
            P_rows, P_cols = self.P_entries
            P_index = np.full(n * n, P_rows.size, np.int64)
            P_index[P_rows * n + P_cols] = np.arange(P_rows.size)
            out.update(P_dense=P_index, P_rows=P_rows, P_cols=P_cols)
        for name, gmap in (("M", self.M.gather), ("K", self.K.gather)):
            for key in ("term_ptr", "left", "right", "weight"):
                out[f"{name}_{key}"] = getattr(gmap, key)
        return out

    def on(self, xp: Any) -> dict[str, Any]:
        """The structure's index arrays on ``xp`` (copied once per namespace)."""
        cache = self.__dict__.setdefault("_on", {})
        key = getattr(xp, "__name__", repr(xp))
        if key not in cache:
            cache[key] = {name: xp.asarray(a) for name, a in self._host.items()}
        return cache[key]


def _dense(values: Any, index: Any, rows: int, cols: int, xp: Any) -> Any:
    """Dense ``(B, rows, cols)`` matrices from values ``(B, nnz)`` through an index of
    each dense position (``nnz``: no value)."""
    padded = xp.concat([values, xp.zeros((values.shape[0], 1))], axis=1)
    return xp.reshape(xp.take(padded, index, axis=1), (values.shape[0], rows, cols))


def _gather_rows(x: Any, index: Any, xp: Any) -> Any:
    return xp.take(x, index, axis=1)


class DenseBatchDerivative:
    """The derivatives of a batch of problems at their solutions ``(x, y, s)``.

    Parameters
    ----------
    structure : DenseStructure
    P_values : array (B, nnz P) or None
        Values of the full symmetric ``P`` on its pattern.
    A_values : array (B, nnz A)
    x, y, s : arrays (B, n), (B, m), (B, m)
    kernels
        The kernel table (:class:`~._modules.DeviceKernels`, or a host build in tests).
    xp : module, optional
        The array namespace of the arrays (by default that of ``A_values``).
    refine_steps : int, default 3
        Refinement steps of every solve against the exact K.
    """

    def __init__(self, structure: DenseStructure, P_values: Any | None, A_values: Any,
                 x: Any, y: Any, s: Any, kernels: Any, xp: Any = None,
                 refine_steps: int = 3) -> None:
        xp = array_module(A_values) if xp is None else xp
        self.structure, self.xp, self.refine_steps = structure, xp, refine_steps
        self.x, self.y = x, y
        n, m = structure.n, structure.m
        a = structure.on(xp)
        self._a = a
        self.D_values, E_values, self.null_values = jacobian_parts(y - s, structure.layout,
                                                                   kernels, xp)
        src = sources(P_values, A_values, self.D_values, E_values, xp)
        M_values = launch_gather(kernels, src, structure.M.gather,
                                 {k: a[f"M_{k}"] for k in ("term_ptr", "left", "right",
                                                           "weight")}, xp)
        K_values = launch_gather(kernels, src, structure.K.gather,
                                 {k: a[f"K_{k}"] for k in ("term_ptr", "left", "right",
                                                           "weight")}, xp)
        size = n + m
        M = _dense(M_values, a["M_dense"], size, size, xp)
        self.K = _dense(K_values, a["K_dense"], size, size, xp)
        largest = xp.max(xp.abs(M_values), axis=1)
        self.regularization = REGULARIZATION * xp.where(largest > 1.0, largest, 1.0)
        shift = _dense(self.regularization[:, None] * a["M_signs"][None, :], a["M_dense"],
                       size, size, xp)
        self.L, self.pivots = dense.ldlt(M + shift, xp)
        self.D = _dense(self.D_values, a["D_dense"], m, m, xp)
        self.null = _dense(self.null_values, a["D_dense"], m, m, xp)
        self.A = _dense(A_values, a["A_dense"], m, n, xp)
        self.P = None if P_values is None else _dense(P_values, a["P_dense"], n, n, xp)
        #: Relative residuals of the last solve's K systems, ``(B,)``.
        self.last_residual = None

    # -- solves -------------------------------------------------------------------------
    def _reduced_solve(self, r: Any, transpose: bool) -> Any:
        """``K⁻¹ r`` (or ``K'⁻¹ r``) through the regularised M, without refinement."""
        xp, n = self.xp, self.structure.n
        r1, r2 = r[:, :n], r[:, n:]
        if transpose:
            null_r2 = dense.matvec(self.null, r2)
            rhs = xp.concat([r1 + dense.matvec(self.A, null_r2, True), r2 - null_r2], axis=1)
            sol = dense.ldlt_solve(self.L, self.pivots, rhs, xp)
            return xp.concat([sol[:, :n], null_r2 - dense.matvec(self.D, sol[:, n:])], axis=1)
        rhs = xp.concat([r1, -dense.matvec(self.D, r2)], axis=1)
        sol = dense.ldlt_solve(self.L, self.pivots, rhs, xp)
        carried = r2 + dense.matvec(self.A, sol[:, :n])
        return xp.concat([sol[:, :n], sol[:, n:] + dense.matvec(self.null, carried)], axis=1)

    def solve(self, r: Any, transpose: bool = False) -> Any:
        """``K z = r`` (or ``K' z = r``) per problem, refined against the exact K."""
        z, self.last_residual = refined_solve(
            lambda rhs: self._reduced_solve(rhs, transpose),
            lambda z: dense.matvec(self.K, z, transpose), r, self.refine_steps, self.xp)
        return z

    # -- JVP and VJP --------------------------------------------------------------------
    def jvp(self, dA: Any | None = None, db: Any | None = None, dc: Any | None = None,
            dP: Any | None = None) -> tuple[Any, Any, Any]:
        """``(dx, dy, ds)`` for perturbations given as values on the stored patterns
        (``dA``, ``dP``: ``(B, nnz)``; ``dP`` of the full symmetric matrix) and vectors."""
        xp, n, m = self.xp, self.structure.n, self.structure.m
        batch = self.x.shape[0]
        top = xp.zeros((batch, n)) if dc is None else dc
        bottom = xp.zeros((batch, m)) if db is None else db
        if dA is not None:
            dA_dense = _dense(dA, self._a["A_dense"], m, n, xp)
            top = top + dense.matvec(dA_dense, self.y, True)
            bottom = bottom - dense.matvec(dA_dense, self.x)
        if dP is not None:
            top = top + dense.matvec(_dense(dP, self._a["P_dense"], n, n, xp), self.x)
        z = self.solve(-xp.concat([top, bottom], axis=1))
        dv = z[:, n:]
        dy = dense.matvec(self.D, dv)
        return z[:, :n], dy, dy - dv

    def vjp(self, dx: Any | None = None, dy: Any | None = None,
            ds: Any | None = None) -> tuple[Any, Any, Any, Any | None]:
        """``(dA, db, dc, dP)`` for cotangents of ``(x, y, s)``: ``dA`` and ``dP`` as
        values on the stored patterns (``dP`` None without P)."""
        xp, n, m = self.xp, self.structure.n, self.structure.m
        batch = self.x.shape[0]
        top = xp.zeros((batch, n)) if dx is None else dx
        gy = xp.zeros((batch, m)) if dy is None else dy
        gs = xp.zeros((batch, m)) if ds is None else ds
        w = self.solve(-xp.concat([top, dense.matvec(self.D, gy + gs) - gs], axis=1),
                       transpose=True)
        w1, w2 = w[:, :n], w[:, n:]
        a = self._a
        dA = (_gather_rows(self.y, a["A_rows"], xp) * _gather_rows(w1, a["A_cols"], xp)
              - _gather_rows(w2, a["A_rows"], xp) * _gather_rows(self.x, a["A_cols"], xp))
        dP = None
        if self.P is not None:
            rows, cols = a["P_rows"], a["P_cols"]
            dP = 0.5 * (_gather_rows(w1, rows, xp) * _gather_rows(self.x, cols, xp)
                        + _gather_rows(self.x, rows, xp) * _gather_rows(w1, cols, xp))
        return dA, w2, w1, dP
