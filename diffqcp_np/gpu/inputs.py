"""Checks and conversions of the device path's inputs, with errors that name the
argument (the CPU's rules of :mod:`diffqcp_np._validation`).

Matrices (SciPy or ``cupyx.scipy.sparse``, dense NumPy or CuPy arrays) become a
canonical CSC matrix whose pattern (index arrays) is read on the host, where the
structure is built and cached, and whose values stay on (or go to) the engine's
namespace; a copy is made when the input is not canonical (the caller's matrix is never
modified). Vectors are copied to the engine as float64. Values are checked for NaN and
Inf once per setup (one read back to the host); the products of ``D`` and ``DT`` only
check shapes (no host round trip), so a NaN in a device perturbation propagates to the
outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .._input_arrays import INVALID, compressed_status, structure_error
from .._validation import as_csc
from ..backend import is_device_array
from .engine import Engine


def device_csc(matrix: Any, name: str, engine: Engine, shape: tuple[int, int] | None = None
               ) -> tuple[np.ndarray, np.ndarray, Any, tuple[int, int]]:
    """``(indptr, indices, values, shape)`` of ``matrix`` as a canonical CSC matrix: the
    pattern on the host (int64), the values (explicit zeros kept) on ``engine``.

    Raises
    ------
    ValueError
        If it is not 2-D or has the wrong shape (values are checked later, see
        :func:`check_finite`).
    """
    if is_device_array(matrix):
        import cupyx.scipy.sparse as csp

        if csp.issparse(matrix):
            canonical = matrix.tocsc(copy=True)
            if not canonical.has_canonical_format:
                canonical.sum_duplicates()
        else:
            if matrix.ndim != 2:
                raise ValueError(f"{name} must be a 2-D matrix, got an array of shape "
                                 f"{matrix.shape}")
            canonical = csp.csc_matrix(matrix.astype(np.float64))
        indptr = canonical.indptr.get().astype(np.int64)
        indices = canonical.indices.get().astype(np.int64)
        values = engine.xp.asarray(canonical.data, dtype=np.float64)
        rows = canonical.shape[0]
        if shape is not None and canonical.shape != shape:
            raise ValueError(f"{name} has shape {canonical.shape}, expected {shape}")
        cols, zeros = canonical.shape[1], np.zeros(indices.size)
        status = compressed_status(rows, cols, indptr, indices, zeros)
        if status == INVALID:
            raise ValueError(structure_error(name, "csc", cols, rows, indptr, indices, zeros))
        if status:  # not canonical after the conversion
            raise ValueError(f"{name} has an invalid sparse structure")
        return indptr, indices, values, canonical.shape
    host = as_csc(matrix, name, shape)
    return (host.indptr.astype(np.int64), host.indices.astype(np.int64),
            engine.asarray(host.data), host.shape)


def device_vector(v: Any, name: str, size: int, engine: Engine, copy: bool = True) -> Any:
    """``v`` as a float64 vector of ``engine`` (a copy unless ``copy`` is False).

    Raises
    ------
    ValueError
        If it is not a vector (or a row or column) of length ``size``.
    """
    xp = engine.xp
    arr = xp.array(v, dtype=xp.float64, copy=True) if copy else engine.asarray(v)
    if arr.ndim != 1:
        if arr.ndim == 2 and 1 in arr.shape:
            arr = xp.reshape(arr, (-1,))
        else:
            raise ValueError(f"{name} must be a 1-D vector, got shape {tuple(arr.shape)}")
    if arr.shape[0] != size:
        raise ValueError(f"{name} has length {arr.shape[0]}, expected {size}")
    return arr


def check_finite(engine: Engine, **arrays: Any) -> None:
    """Raise ``ValueError`` naming the first of ``arrays`` that holds NaN or Inf (one
    read back to the host when all are finite)."""
    xp = engine.xp
    present = {k: v for k, v in arrays.items() if v is not None and v.size}
    if not present:
        return
    total = sum(xp.sum(xp.abs(v) * 0.0) for v in present.values())  # NaN iff one is
    if bool(engine.to_host(total) == 0.0):
        return
    for name, v in present.items():
        if not bool(engine.to_host(xp.all(xp.isfinite(v)))):
            raise ValueError(f"{name} contains NaN or Inf")


def host_csc(matrix: Any) -> Any:
    """A SciPy (or NumPy) copy on the host of a matrix that may live on the device."""
    return matrix.get() if is_device_array(matrix) else matrix


class StoredPattern:
    """A stored CSC pattern of A or P on an engine: perturbations in, gradients out.

    Parameters
    ----------
    indptr, indices : ndarray (host)
    shape : (int, int)
    name : str
        ``"A"`` or ``"P"``, for error messages.
    engine : Engine
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, shape: tuple[int, int],
                 name: str, engine: Engine) -> None:
        self.indptr, self.indices, self.shape, self.name = indptr, indices, shape, name
        self.engine = engine
        self._device = (engine.xp.asarray(indices.astype(np.int32)),
                        engine.xp.asarray(indptr.astype(np.int32)))
        self._host_pattern = None

    @property
    def nnz(self) -> int:
        return self.indices.size

    def values(self, d: Any, argname: str) -> Any:
        """The values of a perturbation on this pattern ``(nnz,)`` on the engine.

        A vector of ``nnz`` values is taken as is (the fast path: no host round trip);
        a matrix (sparse or dense, host or device) is checked on the host as the CPU
        checks it (shape, NaN, nonzeros off the pattern).

        Raises
        ------
        ValueError
            Naming ``argname``.
        """
        if not (sp.issparse(d) or _is_device_sparse(d)) and getattr(d, "ndim", 2) == 1:
            if d.shape[0] != self.nnz:
                raise ValueError(f"{argname} given as values has length {d.shape[0]}, "
                                 f"expected {self.nnz} (the stored entries of {self.name})")
            return self.engine.asarray(d)
        if self._host_pattern is None:
            from ..derivative.patterns import MatrixPattern

            self._host_pattern = MatrixPattern(
                sp.csc_matrix((np.zeros(self.nnz), self.indices, self.indptr),
                              shape=self.shape), self.name)
        host = host_csc(d)
        return self.engine.asarray(self._host_pattern.perturbation_values(host, argname))

    def matrix(self, values: Any) -> Any:
        """A CSC matrix of the engine with ``values`` on this pattern (own index
        arrays)."""
        indices, indptr = self._device
        return self.engine.sparse(values, indices.copy(), indptr.copy(), self.shape)


def _is_device_sparse(d: Any) -> bool:
    if not is_device_array(d):
        return False
    import cupyx.scipy.sparse as csp

    return csp.issparse(d)
