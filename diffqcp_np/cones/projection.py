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

from .._input_arrays import as_real_array
from . import _soc_numba as soc
from ._exp_numba import jacobian_exp, project_exp
from ._power_numba import jacobian_power, project_power
from .psd import PSDJacobian, project_psd
from .spec import ConeLike, ConeSpec, as_cone_spec


def _as_vector(x: np.ndarray, spec: ConeSpec, name: str) -> np.ndarray:
    """``x`` as a contiguous float64 vector of the cones' dimension.

    Raises
    ------
    TypeError
        Naming ``name``, for strings, complex values or anything not made of real numbers.
    ValueError
        If ``x`` does not have the cones' dimension.
    """
    x = np.ascontiguousarray(as_real_array(x, name, "a vector of real numbers"))
    spec.check_vector(x, name)
    return x


#: ``soc_jacobian_data`` of no second-order cones.
_NO_SOC = (np.zeros(0, np.int8), np.zeros(0), np.zeros(0))


def _soc_offsets(spec: ConeSpec) -> np.ndarray:
    if not spec.soc:
        return np.zeros(1, np.int64)
    return np.concatenate(([0], np.cumsum(spec.soc, dtype=np.int64))).astype(np.int64)


def _moreau_project(project, v: np.ndarray, args: tuple, use_dual: bool) -> np.ndarray:
    """Project with a primal kernel, or onto the dual cone: ``Π_{K*}(v) = v + Π_K(−v)``
    (no kernel is called, nor compiled, for an empty ``v``)."""
    if v.size == 0:
        return v.copy()
    if use_dual:
        return v + project(np.ascontiguousarray(-v), *args)
    return project(np.ascontiguousarray(v), *args)


def _moreau_jacobian(jacobian, v: np.ndarray, args: tuple, use_dual: bool) -> np.ndarray:
    """(k, 3, 3) Jacobians from a primal kernel, or ``DΠ_{K*}(v) = I − DΠ_K(−v)``."""
    if v.size == 0:
        return np.zeros((0, 3, 3))
    if use_dual:
        return np.eye(3) - jacobian(np.ascontiguousarray(-v), *args)
    return jacobian(np.ascontiguousarray(v), *args)


def _power_groups(alphas: np.ndarray, dual: bool) -> list[tuple[np.ndarray, tuple, bool]]:
    """``(mask, (|α|,), use_dual)`` for the power cones the kernel projects onto directly
    and for those reached through Moreau (``K_α`` for α > 0, ``K_|α|*`` for α < 0)."""
    primal = (alphas > 0) != dual
    return [(mask, (np.ascontiguousarray(np.abs(alphas[mask])),), use_dual)
            for mask, use_dual in ((primal, False), (~primal, True)) if mask.any()]


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
    # A kernel runs (and is compiled on first use) only for the cones present.
    if spec.nonneg:
        out[sl["l"]] = soc.project_nonneg(x[sl["l"]])
    if spec.soc:
        out[sl["q"]] = soc.project_soc(x[sl["q"]], _soc_offsets(spec))
    out[sl["s"]] = project_psd(x[sl["s"]], spec.psd)
    out[sl["ep"]] = _moreau_project(project_exp, x[sl["ep"]], (), dual)
    out[sl["ed"]] = _moreau_project(project_exp, x[sl["ed"]], (), not dual)
    blocks, out_blocks = x[sl["p"]].reshape(-1, 3), out[sl["p"]].reshape(-1, 3)
    for mask, args, use_dual in _power_groups(np.asarray(spec.power, float), dual):
        out_blocks[mask] = _moreau_project(project_power, blocks[mask].ravel(), args,
                                           use_dual).reshape(-1, 3)
    return out


def _three_by_three_jacobians(x: np.ndarray, spec: ConeSpec, dual: bool) -> np.ndarray:
    """Stacked (k, 3, 3) Jacobians of the exponential, dual exponential and power cones."""
    sl = spec.slices()
    alphas = np.asarray(spec.power, float)
    power = np.zeros((alphas.size, 3, 3))
    blocks = x[sl["p"]].reshape(-1, 3)
    for mask, args, use_dual in _power_groups(alphas, dual):
        power[mask] = _moreau_jacobian(jacobian_power, blocks[mask].ravel(), args, use_dual)
    return np.concatenate([
        _moreau_jacobian(jacobian_exp, x[sl["ep"]], (), dual),
        _moreau_jacobian(jacobian_exp, x[sl["ed"]], (), not dual),
        power,
    ], axis=0)


def block_coordinates(count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns, from the first block's first row on, of the entries of ``count``
    consecutive dense ``size × size`` diagonal blocks, in the order of ``blocks.ravel()``
    for a C-ordered ``(count, size, size)`` stack."""
    base = np.arange(count)[:, None, None] * size
    rows = np.broadcast_to(base + np.arange(size)[None, :, None], (count, size, size))
    cols = np.broadcast_to(base + np.arange(size)[None, None, :], (count, size, size))
    return rows.ravel(), cols.ravel()


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
        self.spec = spec = as_cone_spec(cones)
        x = _as_vector(x, spec, "x")
        self.dual = dual
        self.shape = (x.size, x.size)
        sl = spec.slices()
        self._slices = sl
        #: The Jacobian's leading zero-cone and orthant rows, where it is diagonal (the
        #: whole diagonal when there are no other cones).
        self.diagonal_part = np.concatenate([np.full(spec.zero, 1.0 if dual else 0.0),
                                             soc.jacobian_nonneg(x[sl["l"]])])
        self._soc_offsets = _soc_offsets(spec)
        self._soc = (soc.soc_jacobian_data(np.ascontiguousarray(x[sl["q"]]), self._soc_offsets)
                     if spec.soc else _NO_SOC)
        self._psd = PSDJacobian(x[sl["s"]], spec.psd)
        self._small_start = sl["ep"].start
        self._small = (_three_by_three_jacobians(x, spec, dual)
                       if spec.exp or spec.exp_dual or spec.power else np.zeros((0, 3, 3)))

    def matvec(self, dx: np.ndarray) -> np.ndarray:
        """Apply the Jacobian to ``dx`` (shape (m,))."""
        dx = np.ascontiguousarray(dx, dtype=np.float64)
        if dx.shape != (self.shape[0],):
            raise ValueError(f"dx has shape {dx.shape}, expected ({self.shape[0]},)")
        k = self.diagonal_part.size
        if k == dx.size:
            return self.diagonal_part * dx
        sl, spec = self._slices, self.spec
        out = np.empty_like(dx)
        out[:k] = self.diagonal_part * dx[:k]
        if spec.soc:
            out[sl["q"]] = soc.soc_jacobian_apply(
                np.ascontiguousarray(dx[sl["q"]]), self._soc_offsets, *self._soc
            )
        if spec.psd:
            out[sl["s"]] = self._psd.matvec(dx[sl["s"]])
        if self._small.shape[0]:
            small = dx[self._small_start:].reshape(-1, 3)
            out[self._small_start:] = np.einsum("kij,kj->ki", self._small, small).ravel()
        return out

    __call__ = matvec

    def same_as(self, other: ConeJacobian) -> bool:
        """Whether ``other`` is the same matrix: the same cones and equal blocks (as at
        two points on one face of a polyhedral cone, or inside the same SOC regions)."""
        if self.spec != other.spec or self.dual != other.dual:
            return False
        if not np.array_equal(self.diagonal_part, other.diagonal_part):
            return False
        if not all(np.array_equal(a, b) for a, b in zip(self._soc, other._soc)):
            return False
        return np.array_equal(self._small, other._small) and self._psd.same_as(other._psd)

    def _triplets(self, with_psd: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, columns and values of the blocks' entries (PSD blocks only if
        ``with_psd``)."""
        sl = self._slices
        rows, cols, vals = [], [], []

        def add(r, c, v, offset):
            rows.append(np.asarray(r, np.int64) + offset)
            cols.append(np.asarray(c, np.int64) + offset)
            vals.append(np.asarray(v, float))

        start = 0 if self.dual else self.spec.zero  # the primal zero cone's rows are 0
        idx = np.arange(start, self.diagonal_part.size)
        add(idx, idx, self.diagonal_part[start:], 0)
        add(*soc.soc_jacobian_triplets(self._soc_offsets, *self._soc), sl["q"].start)
        if with_psd:
            for offset, block in self.psd_blocks():
                add(*block_coordinates(1, block.shape[0]), block.ravel(), offset)
        add(*block_coordinates(self._small.shape[0], 3), self._small.ravel(),
            self._small_start)
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)

    def psd_blocks(self, *spectral_maps):
        """``(first row, dense block)`` of each PSD block; with ``spectral_maps`` the
        blocks are tuples of matrix functions (see :meth:`PSDJacobian.dense_blocks`)."""
        offset = self._slices["s"].start
        for block in self._psd.dense_blocks(*spectral_maps):
            yield offset, block
            offset += (block[0] if spectral_maps else block).shape[0]

    def to_sparse(self) -> sp.csc_matrix:
        """The Jacobian as a sparse block-diagonal CSC matrix (exact blocks)."""
        m = self.shape[0]
        rows, cols, vals = self._triplets(True)
        mat = sp.coo_matrix((vals, (rows, cols)), shape=(m, m)).tocsc()
        mat.eliminate_zeros()
        return mat

    def to_dense(self) -> np.ndarray:
        """The Jacobian as a dense ``m × m`` array (exact blocks)."""
        m = self.shape[0]
        out = np.zeros((m, m))
        rows, cols, vals = self._triplets(False)
        out[rows, cols] = vals
        for offset, block in self.psd_blocks():
            d = block.shape[0]
            out[offset:offset + d, offset:offset + d] = block
        return out

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
