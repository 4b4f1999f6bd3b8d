"""Projections onto products of cones and their Jacobians.

Every cone kind has a primal kernel; projections onto a dual cone use Moreau's
decomposition, ``Π_{K*}(v) = v + Π_K(−v)`` and ``DΠ_{K*}(v) = I − DΠ_K(−v)``.
The Jacobian of the whole product is a :class:`ConeJacobian`: block diagonal,
symmetric, applied in time linear in the number of rows for the orthant, SOC and
3-D cones, and convertible to a sparse matrix for direct solvers.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from . import _soc_numba as soc
from ._exp_numba import jacobian_exp, project_exp
from ._power_numba import jacobian_power, project_power
from .psd import PSDJacobian, project_psd
from .spec import ConeLike, ConeSpec, as_cone_spec


def _as_vector(x: np.ndarray, spec: ConeSpec, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float64)
    spec.check_vector(x, name)
    return x


def _soc_offsets(spec: ConeSpec) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(spec.soc, dtype=np.int64))).astype(np.int64)


def _project_dual_of(project, v: np.ndarray, *args) -> np.ndarray:
    """Projection onto the dual of a cone whose primal projection is ``project``."""
    return v + project(-v, *args)


def _project_power_signed(v: np.ndarray, alphas: np.ndarray, dual: bool) -> np.ndarray:
    """Project onto the product of power cones ``K_α`` (α > 0) and ``K_|α|*`` (α < 0)."""
    out = np.empty_like(v)
    blocks = v.reshape(-1, 3)
    out_blocks = out.reshape(-1, 3)
    primal = (alphas > 0) != dual
    for mask, use_dual in ((primal, False), (~primal, True)):
        if not mask.any():
            continue
        vi = np.ascontiguousarray(blocks[mask]).ravel()
        ai = np.ascontiguousarray(np.abs(alphas[mask]))
        proj = _project_dual_of(project_power, vi, ai) if use_dual else project_power(vi, ai)
        out_blocks[mask] = proj.reshape(-1, 3)
    return out


def pi(x: np.ndarray, cones: ConeLike, dual: bool = False) -> np.ndarray:
    """Project ``x`` onto a product of cones, or onto its dual cone.

    Parameters
    ----------
    x : ndarray, shape (m,)
        Point to project, PSD blocks in SCS's scaled lower-triangle vectorisation.
    cones : dict, list of (key, value) or ConeSpec
        The cones (``cone_dict`` or :func:`parse_cone_dict`'s output).
    dual : bool, default False
        Project onto the dual cone ``K*`` instead of ``K``.

    Returns
    -------
    ndarray, shape (m,)

    Raises
    ------
    ValueError
        If the cones are invalid or ``x`` does not have their total dimension.
    """
    spec = as_cone_spec(cones)
    x = _as_vector(x, spec, "x")
    out = np.empty_like(x)
    sl = spec.slices()
    out[sl["z"]] = x[sl["z"]] if dual else 0.0
    out[sl["l"]] = soc.project_nonneg(x[sl["l"]])
    out[sl["q"]] = soc.project_soc(x[sl["q"]], _soc_offsets(spec))
    out[sl["s"]] = project_psd(x[sl["s"]], spec.psd)
    exp_primal, exp_dual = (x[sl["ep"]], x[sl["ed"]])
    if dual:
        out[sl["ep"]] = _project_dual_of(project_exp, exp_primal)
        out[sl["ed"]] = project_exp(exp_dual)
    else:
        out[sl["ep"]] = project_exp(exp_primal)
        out[sl["ed"]] = _project_dual_of(project_exp, exp_dual)
    out[sl["p"]] = _project_power_signed(x[sl["p"]], np.asarray(spec.power, float), dual)
    return out


def _three_by_three_jacobians(x: np.ndarray, spec: ConeSpec, dual: bool) -> np.ndarray:
    """Stacked (k, 3, 3) Jacobians of the exponential, dual exponential and power cones."""
    sl = spec.slices()
    eye = np.eye(3)

    def primal_or_dual(jac, v, args, use_dual):
        if v.size == 0:
            return np.zeros((0, 3, 3))
        if use_dual:
            return eye - jac(np.ascontiguousarray(-v), *args)
        return jac(np.ascontiguousarray(v), *args)

    parts = [
        primal_or_dual(jacobian_exp, x[sl["ep"]], (), dual),
        primal_or_dual(jacobian_exp, x[sl["ed"]], (), not dual),
    ]
    alphas = np.asarray(spec.power, float)
    power = np.zeros((alphas.size, 3, 3))
    blocks = x[sl["p"]].reshape(-1, 3)
    primal = (alphas > 0) != dual
    for mask, use_dual in ((primal, False), (~primal, True)):
        if mask.any():
            vi = np.ascontiguousarray(blocks[mask]).ravel()
            ai = np.ascontiguousarray(np.abs(alphas[mask]))
            power[mask] = primal_or_dual(jacobian_power, vi, (ai,), use_dual)
    parts.append(power)
    return np.concatenate(parts, axis=0)


class ConeJacobian:
    """Jacobian ``DΠ_K(v)`` (or ``DΠ_{K*}(v)``) of the projection onto a product of cones.

    Block diagonal and symmetric with eigenvalues in [0, 1]. Zero cone: 0 (dual: I);
    orthant: a 0/1 diagonal (½ at the kink); SOC: applied in O(dim); PSD: via the
    eigendecomposition of each block; exponential and power cones: 3×3 blocks.

    Parameters
    ----------
    x : ndarray, shape (m,)
        Point at which the projection is differentiated.
    cones : dict, list of (key, value) or ConeSpec
    dual : bool, default False
        Differentiate the projection onto ``K*``.
    """

    def __init__(self, x: np.ndarray, cones: ConeLike, dual: bool = False) -> None:
        self.spec = as_cone_spec(cones)
        x = _as_vector(x, self.spec, "x")
        self.dual = dual
        self.shape = (x.size, x.size)
        sl = self.spec.slices()
        self._slices = sl
        self._nonneg = soc.jacobian_nonneg(x[sl["l"]])
        self._soc_offsets = _soc_offsets(self.spec)
        self._soc = soc.soc_jacobian_data(np.ascontiguousarray(x[sl["q"]]), self._soc_offsets)
        self._psd = PSDJacobian(x[sl["s"]], self.spec.psd)
        self._small_start = sl["ep"].start
        self._small = _three_by_three_jacobians(x, self.spec, dual)

    def matvec(self, dx: np.ndarray) -> np.ndarray:
        """Apply the Jacobian to ``dx`` (shape (m,))."""
        dx = np.ascontiguousarray(dx, dtype=np.float64)
        if dx.shape != (self.shape[0],):
            raise ValueError(f"dx has shape {dx.shape}, expected ({self.shape[0]},)")
        sl = self._slices
        out = np.empty_like(dx)
        out[sl["z"]] = dx[sl["z"]] if self.dual else 0.0
        out[sl["l"]] = self._nonneg * dx[sl["l"]]
        out[sl["q"]] = soc.soc_jacobian_apply(
            np.ascontiguousarray(dx[sl["q"]]), self._soc_offsets, *self._soc
        )
        out[sl["s"]] = self._psd.matvec(dx[sl["s"]])
        small = dx[self._small_start:].reshape(-1, 3)
        out[self._small_start:] = np.einsum("kij,kj->ki", self._small, small).ravel()
        return out

    __call__ = matvec

    def to_sparse(self) -> sp.csc_matrix:
        """The Jacobian as a sparse block-diagonal CSC matrix (exact blocks)."""
        sl = self._slices
        rows, cols, vals = [], [], []

        def add(r, c, v, offset):
            rows.append(np.asarray(r, np.int64) + offset)
            cols.append(np.asarray(c, np.int64) + offset)
            vals.append(np.asarray(v, float))

        if self.dual:
            idx = np.arange(self.spec.zero)
            add(idx, idx, np.ones(idx.size), 0)
        idx = np.arange(self.spec.nonneg)
        add(idx, idx, self._nonneg, sl["l"].start)
        add(*soc.soc_jacobian_triplets(self._soc_offsets, *self._soc), sl["q"].start)
        offset = sl["s"].start
        for block in self._psd.dense_blocks():
            d = block.shape[0]
            add(np.tile(np.arange(d), d), np.repeat(np.arange(d), d), block.ravel(order="F"),
                offset)
            offset += d
        k = self._small.shape[0]
        base = np.arange(k)[:, None, None] * 3
        r = np.broadcast_to(base + np.arange(3)[None, :, None], (k, 3, 3))
        c = np.broadcast_to(base + np.arange(3)[None, None, :], (k, 3, 3))
        add(r.ravel(), c.ravel(), self._small.ravel(), self._small_start)
        m = self.shape[0]
        mat = sp.coo_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m)
        ).tocsc()
        mat.eliminate_zeros()
        return mat

    def as_linear_operator(self) -> LinearOperator:
        """The Jacobian as a symmetric :class:`scipy.sparse.linalg.LinearOperator`."""
        return LinearOperator(self.shape, matvec=self.matvec, rmatvec=self.matvec, dtype=float)


def dpi(x: np.ndarray, cones: ConeLike, dual: bool = False) -> LinearOperator:
    """Jacobian of :func:`pi` at ``x`` as a symmetric ``LinearOperator``.

    Parameters
    ----------
    x : ndarray, shape (m,)
    cones : dict, list of (key, value) or ConeSpec
    dual : bool, default False
        Differentiate the projection onto the dual cone.

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
        ``m × m``, symmetric (``rmatvec`` equals ``matvec``).
    """
    return ConeJacobian(x, cones, dual).as_linear_operator()


def dpi_matrix(x: np.ndarray, cones: ConeLike, dual: bool = False) -> sp.csc_matrix:
    """Jacobian of :func:`pi` at ``x`` as a sparse block-diagonal CSC matrix.

    Each block is exact and no larger than its cone; interior SOC blocks are identities
    and polar blocks empty.
    """
    return ConeJacobian(x, cones, dual).to_sparse()
