"""Checks of the arrays inside user input before anything compiled reads them.

SciPy's constructors check little of a compressed matrix's structure
(``scipy.sparse.csc_matrix((data, indices, indptr), shape=...)`` accepts row indices
outside ``[0, m)`` and an ``indptr`` that decreases), and a matrix's arrays can be
replaced after it was built. Our kernels, SciPy's own C++ routines and the solvers' C
and Rust code index with these arrays unchecked, so a broken structure reads or writes
out of bounds (a crash, or an entry silently applied to another). Every sparse input
is therefore checked here first, in one compiled pass for the compressed formats:
:func:`compressed_arrays` validates and returns the arrays, :func:`structure_error`
explains what is wrong. :func:`real_values` refuses complex and non-numeric data.
"""

from __future__ import annotations

import numba
import numpy as np

#: :func:`compressed_status` flags (0: valid, canonical and finite, no unused entries).
NOT_CANONICAL = 1  # indices unsorted within a column (row), or duplicates
NOT_FINITE = 2  # a value is NaN or infinite
UNUSED_TAIL = 4  # indices and data go on past indptr[-1] (SciPy allows it; ignored)
INVALID = -1  # the structure is broken: nothing may index with it

#: Index dtypes the kernel is compiled for; other integer types are converted first.
INDEX_TYPES = (np.dtype(np.int32), np.dtype(np.int64))


@numba.njit(nogil=True, cache=True)
def compressed_status(inner, outer, indptr, indices, data):
    """Flags of compressed (CSC or CSR) arrays: :data:`INVALID`, or the sum of
    :data:`NOT_CANONICAL`, :data:`NOT_FINITE` and :data:`UNUSED_TAIL` that apply; reads
    nothing out of bounds.

    ``outer`` is the number of columns (rows for CSR), ``inner`` the length of the axis
    the indices run over. The structure is valid when ``indptr`` has ``outer + 1``
    entries, starts at 0, never decreases and ends at most at the number of indices,
    the data have one value per index and every index in use lies in ``[0, inner)``.
    Canonical: indices strictly increasing within each column (row).

    Flat loops without early exits past the ``indptr`` checks: an index that does not
    increase is allowed only at the first entry of a column, so the canonical form
    holds when the number of such places equals the number of column starts among them.
    """
    if indptr.shape[0] != outer + 1 or indices.shape[0] != data.shape[0]:
        return INVALID
    nnz = indptr[outer]
    if indptr[0] != 0 or nnz > indices.shape[0]:
        return INVALID
    for j in range(outer):
        if indptr[j + 1] < indptr[j]:
            return INVALID
    lowest, highest = 0, -1
    for p in range(nnz):
        lowest = min(lowest, indices[p])
        highest = max(highest, indices[p])
    if lowest < 0 or highest >= inner:
        return INVALID
    descents_at_starts = 0
    for j in range(1, outer):
        start = indptr[j]
        if 0 < start < indptr[j + 1] and indices[start] <= indices[start - 1]:
            descents_at_starts += 1
    descents = 0
    for p in range(1, nnz):
        descents += indices[p] <= indices[p - 1]
    nonfinite = 0.0  # NaN once any value is NaN or infinite
    for p in range(nnz):
        nonfinite += data[p] * 0.0
    flags = 0 if descents == descents_at_starts else NOT_CANONICAL
    if nonfinite != 0.0:
        flags += NOT_FINITE
    if nnz < indices.shape[0]:
        flags += UNUSED_TAIL
    return flags


def has_index_arrays(matrix) -> bool:
    """Whether a compressed matrix's ``indptr`` and ``indices`` are 1-D arrays of a type
    the kernels are compiled for (int32 or int64): what a pattern comparison needs
    before it may call two patterns equal (``0.0 == 0``)."""
    return are_index_arrays(matrix.indptr, matrix.indices)


def are_index_arrays(indptr: object, indices: object) -> bool:
    """Whether ``indptr`` and ``indices`` are 1-D NumPy arrays of int32 or int64 (see
    :func:`has_index_arrays`)."""
    return (type(indptr) is np.ndarray and type(indices) is np.ndarray
            and indptr.ndim == 1 and indices.ndim == 1
            and indptr.dtype in INDEX_TYPES and indices.dtype in INDEX_TYPES)


def real_values(values, name: str) -> np.ndarray:
    """``values`` (an ndarray) as float64: itself when it is float64 already, a converted
    copy for booleans and integers.

    Raises
    ------
    TypeError
        Naming ``name``, for complex values or anything that is not a number.
    """
    dtype = values.dtype
    if dtype == np.float64:
        return values
    if dtype.kind in "biuf":
        return values.astype(np.float64)
    if dtype.kind == "c":
        raise TypeError(f"{name} has complex values ({dtype}); the data must be real")
    raise TypeError(f"{name} must hold real numbers, got values of type {dtype}")


def as_real_array(value, name: str, what: str = "an array of real numbers") -> np.ndarray:
    """``value`` as a float64 ndarray (not copied when it is one).

    Raises
    ------
    TypeError
        Naming ``name``, for complex values, strings, None, or anything else that is
        not an array of real numbers (``what`` describes what was expected).
    """
    if type(value) is np.ndarray and value.dtype == np.float64:
        return value
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as err:  # ragged nested lists, unconvertible objects
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}: {err}") from err
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}"
                        + (f" of {arr.dtype}" if isinstance(value, np.ndarray) else ""))
    return real_values(arr, name)


def _axes(fmt: str) -> tuple[str, str]:
    """Names of the axes a compressed format's ``indptr`` and indices run over."""
    return ("column", "row") if fmt == "csc" else ("row", "column")


def _index_array(array, name: str, what: str) -> np.ndarray:
    if not (isinstance(array, np.ndarray) and array.ndim == 1 and array.dtype.kind in "iu"):
        kind = getattr(array, "dtype", type(array).__name__)
        raise ValueError(f"{name}: {what} must be a 1-D array of integers, got {kind}")
    return array if array.dtype in INDEX_TYPES else array.astype(np.int64)


def compressed_arrays(matrix, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The validated ``indptr, indices, data`` of a CSC or CSR matrix and their flags.

    The arrays are the matrix's own where they can be (not copied): ``indices`` and
    ``data`` cut to the ``indptr[-1]`` entries in use (SciPy allows longer arrays),
    ``data`` converted to float64 by :func:`real_values`.

    Returns
    -------
    indptr, indices, data : ndarray
    flags : int
        :data:`NOT_CANONICAL` and :data:`NOT_FINITE`, as :func:`compressed_status`.

    Raises
    ------
    ValueError
        Naming ``name``, when the structure is broken (:func:`structure_error`).
    TypeError
        For complex or non-numeric values.
    """
    fmt = matrix.format
    rows, cols = matrix.shape
    outer, inner = (cols, rows) if fmt == "csc" else (rows, cols)
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    if not has_index_arrays(matrix):
        indptr = _index_array(indptr, name, "indptr")
        indices = _index_array(indices, name, f"the {_axes(fmt)[1]} indices")
    if not (type(data) is np.ndarray and data.ndim == 1 and data.dtype == np.float64):
        if not isinstance(data, np.ndarray) or data.ndim != 1:
            raise ValueError(f"{name}: data must be a 1-D array")
        data = real_values(data, name)
    flags = compressed_status(inner, outer, indptr, indices, data)
    if flags == INVALID:
        raise ValueError(structure_error(name, fmt, outer, inner, indptr, indices, data))
    if flags & UNUSED_TAIL:
        nnz = int(indptr[-1])
        indices, data = indices[:nnz], data[:nnz]
        flags -= UNUSED_TAIL
    return indptr, indices, data, int(flags)


def structure_error(name: str, fmt: str, outer: int, inner: int, indptr: np.ndarray,
                    indices: np.ndarray, data: np.ndarray) -> str:
    """What is wrong with compressed arrays that :func:`compressed_status` calls invalid
    (NumPy code: only for the message)."""
    outer_axis, inner_axis = _axes(fmt)
    head = f"{name} is not a valid {fmt.upper()} matrix: "
    if indptr.size != outer + 1:
        return head + (f"indptr has {indptr.size} entries, expected {outer + 1} (one per "
                       f"{outer_axis} and one more)")
    if indices.size != data.size:
        return head + f"{indices.size} {inner_axis} indices but {data.size} values"
    if indptr[0] != 0:
        return head + f"indptr starts at {int(indptr[0])}, not 0"
    steps = np.diff(indptr)
    if steps.size and steps.min() < 0:
        j = int(np.argmax(steps < 0))
        return head + (f"indptr decreases at {outer_axis} {j} ({int(indptr[j])} then "
                       f"{int(indptr[j + 1])})")
    nnz = int(indptr[-1])
    if nnz > indices.size:
        return head + (f"indptr ends at {nnz}, but only {indices.size} {inner_axis} "
                       "indices are stored")
    used = indices[:nnz]
    bad = (used < 0) | (used >= inner)
    if bad.any():
        p = int(np.argmax(bad))
        return head + (f"{inner_axis} index {int(used[p])} (stored entry {p}) is outside "
                       f"[0, {inner})")
    return head + "inconsistent arrays"


def coordinate_arrays(matrix, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The validated ``row, col, data`` of a COO matrix (data as by :func:`real_values`).

    Raises
    ------
    ValueError
        When the arrays differ in length or an index is out of range.
    TypeError
        For complex or non-numeric values.
    """
    m, n = matrix.shape
    rows = _index_array(matrix.row, name, "row")
    cols = _index_array(matrix.col, name, "col")
    data = real_values(np.asarray(matrix.data), name)
    if not rows.size == cols.size == data.size:
        raise ValueError(f"{name} is not a valid COO matrix: {rows.size} row indices, "
                         f"{cols.size} column indices and {data.size} values")
    for axis, index, size in (("row", rows, m), ("column", cols, n)):
        if index.size and (index.min() < 0 or index.max() >= size):
            p = int(np.argmax((index < 0) | (index >= size)))
            raise ValueError(f"{name} is not a valid COO matrix: {axis} index "
                             f"{int(index[p])} (entry {p}) is outside [0, {size})")
    return rows, cols, data
