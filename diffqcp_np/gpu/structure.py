"""What the device derivative of one problem structure needs, built once on the host.

A structure is a cone product, ``n``, and the stored patterns of ``A`` and ``P`` (with
P's storage convention). From them, with NumPy and once per structure (kept in an LRU
cache, :func:`structure_for`):

* the block-diagonal superset layout of the cone Jacobian (every row kept, full cone
  blocks: a pattern that does not depend on the solution) and the gathers of the values
  of ``M = [[P, A'D], [DA, −E]]`` (CSC upper triangle = CSR lower triangle, cuDSS's
  ``SYMMETRIC``/``LOWER`` input) and of ``K = [[P, A'D], [−A, I − D]]``
  (:mod:`.assembly`);
* the full symmetric P's pattern and the map from the caller's stored values to it
  (``½(P + P')`` for full storage, the mirrored upper triangle otherwise), and the map
  of P's asymmetry;
* product maps (:mod:`.products`) for ``A``, ``A'``, ``D``, ``Π₀``, ``K``, ``K'`` and the
  row magnitudes of M (equilibration);
* the probe vector of the singularity test.

:meth:`DeviceStructure.on` copies the arrays to an array namespace once; the direct
solvers of a structure (planned once per pattern and batch size) are kept by
:meth:`DeviceStructure.slot`.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._sparse import equal_patterns
from ..cones.spec import ConeSpec
from ..derivative._reduced_numba import probe_vector
from .assembly import GatherMap, MatrixMap, ReducedMatrixMap, kkt_matrix_map, reduced_matrix_map
from .layout import BlockLayout
from .products import DeviceMap, product_map, symmetric_magnitude_map, terms_map

Pattern = tuple[np.ndarray, np.ndarray]


def _entries(pattern: Pattern) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (int64) of a CSC pattern's stored entries."""
    indptr, indices = pattern
    return (np.asarray(indices, np.int64),
            np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr)))


def _square_map(rows: np.ndarray, cols: np.ndarray, left: np.ndarray, weight: np.ndarray,
                size: int, sources: int) -> tuple[Pattern, GatherMap]:
    """The CSC pattern of the entries ``(rows, cols)`` (duplicates merged) of a
    ``size × size`` matrix and the map whose entry sums ``weight · src[left] · 1``
    (the constant 1 is source ``sources − 1``)."""
    keys = cols * size + rows
    unique, entry = np.unique(keys, return_inverse=True)
    u_cols, u_rows = np.divmod(unique, size)
    indptr = np.concatenate(([0], np.cumsum(np.bincount(u_cols, minlength=size))))
    gmap = terms_map(entry.reshape(-1), left, np.full(left.size, sources - 1), weight,
                     unique.size, sources)
    return (indptr.astype(np.int64), u_rows.astype(np.int64)), gmap


def quadratic_maps(pattern: Pattern, storage: str, n: int
                   ) -> tuple[Pattern, GatherMap, GatherMap]:
    """The full symmetric P's CSC pattern, the map from the stored values (sources
    ``[stored | 1]``) to its values, and the map of ``P_ij − P_ji`` on it (zero for
    upper storage)."""
    rows, cols = _entries(pattern)
    nnz = rows.size
    stored = np.arange(nnz)
    if storage == "upper":
        strict = np.flatnonzero(rows != cols)
        full_rows = np.concatenate([rows, cols[strict]])
        full_cols = np.concatenate([cols, rows[strict]])
        left, weight = np.concatenate([stored, strict]), np.ones(full_rows.size)
        full, gmap = _square_map(full_rows, full_cols, left, weight, n, nnz + 1)
        difference = GatherMap(np.zeros(full[1].size + 1, np.int64), np.zeros(0, np.int64),
                               np.zeros(0, np.int64), np.zeros(0), nnz + 1)
        return full, gmap, difference
    both_rows, both_cols = np.concatenate([rows, cols]), np.concatenate([cols, rows])
    left = np.concatenate([stored, stored])
    full, gmap = _square_map(both_rows, both_cols, left, np.full(2 * nnz, 0.5), n, nnz + 1)
    _, difference = _square_map(both_rows, both_cols, left,
                                np.concatenate([np.ones(nnz), -np.ones(nnz)]), n, nnz + 1)
    return full, gmap, difference


@dataclass(eq=False)
class DeviceStructure:
    """The host-built structure of problems with cones ``spec``, ``n`` variables and the
    stored patterns of ``A`` and ``P`` (see the module docstring).

    Attributes
    ----------
    spec : ConeSpec
    n, m : int
    A_pattern : (indptr, indices)
    P_pattern : (indptr, indices) or None
        The caller's stored pattern of P.
    P_storage : {"full", "upper"} or None
    layout : BlockLayout
    M : ReducedMatrixMap
    K : MatrixMap
    """

    spec: ConeSpec
    n: int
    A_pattern: Pattern
    P_pattern: Pattern | None
    P_storage: str | None
    layout: BlockLayout = field(init=False)
    M: ReducedMatrixMap = field(init=False)
    K: MatrixMap = field(init=False)

    def __post_init__(self) -> None:
        spec, n = self.spec, self.n
        self.layout = BlockLayout.from_spec(spec, max(spec.soc, default=0))
        self.P_full_pattern = None
        if self.P_pattern is not None:
            self.P_full_pattern, self._P_full, self._P_difference = quadratic_maps(
                self.P_pattern, self.P_storage, n)
        self.M = reduced_matrix_map(n, self.P_full_pattern, self.A_pattern, self.layout)
        self.K = kkt_matrix_map(n, self.P_full_pattern, self.A_pattern, self.layout)
        self._namespaces: dict[str, dict[str, Any]] = {}
        self._solvers: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    @property
    def m(self) -> int:
        return self.layout.m

    @property
    def size(self) -> int:
        """Rows of K and M (``n + m``)."""
        return self.n + self.m

    @functools.cached_property
    def _host(self) -> dict[str, Any]:
        n, m = self.n, self.m
        A_rows, A_cols = _entries(self.A_pattern)
        out: dict[str, Any] = {
            "A": product_map(*self.A_pattern, (m, n)),
            "AT": product_map(*self.A_pattern, (m, n), transpose=True),
            "D": self._layout_product(),
            "K": product_map(self.K.indptr, self.K.indices, (self.size, self.size)),
            "KT": product_map(self.K.indptr, self.K.indices, (self.size, self.size), True),
            "M_gather": self.M.gather, "K_gather": self.K.gather,
            "M_rows": symmetric_magnitude_map(self.M.indptr, self.M.indices, self.size),
        }
        M_rows, M_cols = _entries((self.M.indptr, self.M.indices))
        arrays = {"A_rows": A_rows, "A_cols": A_cols, "M_signs": self.M.signs,
                  "M_entry_rows": M_rows, "M_entry_cols": M_cols,
                  "probe": probe_vector(self.size, 0)}
        if self.P_pattern is not None:
            out["P_full"], out["P_difference"] = self._P_full, self._P_difference
            out["P"] = product_map(*self.P_full_pattern, (n, n))
            P_rows, P_cols = _entries(self.P_pattern)
            arrays.update(P_rows=P_rows, P_cols=P_cols,
                          P_scale=np.where((P_rows != P_cols) & (self.P_storage == "upper"),
                                           2.0, 1.0))
        return {"maps": out, "arrays": arrays}

    def _layout_product(self) -> GatherMap:
        """``D v`` for values in the layout's storage order; sources ``[values | v]``."""
        layout = self.layout
        out, inner = layout.rows, layout.cols
        return terms_map(out, layout.storage, layout.size + inner, np.ones(out.size),
                         layout.m, layout.size + layout.m)

    def on(self, xp: Any) -> dict[str, Any]:
        """The structure's maps (:class:`~.products.DeviceMap`) and index arrays on
        ``xp``, copied once per namespace."""
        key = getattr(xp, "__name__", repr(xp))
        with self._lock:
            if key not in self._namespaces:
                host = self._host
                device: dict[str, Any] = {k: DeviceMap.on(g, xp)
                                          for k, g in host["maps"].items()}
                device.update({k: xp.asarray(a) for k, a in host["arrays"].items()})
                self._namespaces[key] = device
            return self._namespaces[key]

    def slot(self, engine: Any, kind: str, batch: int) -> SolverSlot:
        """The direct solver of ``kind`` (``"symmetric"``: LDLᵀ of M; ``"general"``: LU
        of K) for ``batch`` problems on ``engine``, made (and its analysis done) on first
        use and kept with the structure."""
        key = (engine.name, kind, batch)
        with self._lock:
            if key not in self._solvers:
                if kind == "symmetric":
                    solver = engine.symmetric(self.M.indptr, self.M.indices, self.size, batch)
                else:
                    solver = engine.general(self.K.indptr, self.K.indices, self.size, batch)
                self._solvers[key] = SolverSlot(solver)
            return self._solvers[key]


class SolverSlot:
    """A planned solver shared by the derivatives of one structure and batch size.

    The solver holds one factorisation at a time: :meth:`run` refactors it with the
    caller's values first when another derivative factored it since (an interleaved
    use costs a factorisation, never a wrong answer).
    """

    def __init__(self, solver: Any) -> None:
        self.solver = solver
        self._owner: object | None = None
        self._lock = threading.Lock()

    def factorize(self, owner: object, values: Any) -> None:
        """Factor ``values`` for ``owner``."""
        with self._lock:
            self.solver.factorize(values)
            self._owner = owner

    def run(self, owner: object, values: Any, task: Any) -> Any:
        """``task(solver)`` with the solver factored for ``owner`` (with ``values``)."""
        with self._lock:
            if self._owner is not owner:
                self.solver.factorize(values)
                self._owner = owner
            return task(self.solver)


def _pattern_key(pattern: Pattern | None) -> tuple:
    if pattern is None:
        return (None,)
    indptr, indices = pattern
    return (indptr.size, indices.size, hash(indptr.tobytes()), hash(indices.tobytes()))


class StructureCache:
    """The structures of recently differentiated problems (thread-safe, LRU), patterns
    compared exactly.

    Parameters
    ----------
    size : int
        Number of structures kept (each holds its device arrays and planned solvers).
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: ConeSpec, n: int, A_pattern: Pattern, P_pattern: Pattern | None,
            P_storage: str | None) -> DeviceStructure:
        """The structure of these patterns, built on first use."""
        key = (spec, n, P_storage, _pattern_key(A_pattern), _pattern_key(P_pattern))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and _same(entry.A_pattern, A_pattern) and _same(
                    entry.P_pattern, P_pattern):
                self._entries.move_to_end(key)
                return entry
        structure = DeviceStructure(spec, n, _copy(A_pattern), _copy(P_pattern), P_storage)
        with self._lock:
            self._entries[key] = structure
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return structure

    def clear(self) -> None:
        """Forget every structure (and with them their planned solvers)."""
        with self._lock:
            self._entries.clear()


def _same(a: Pattern | None, b: Pattern | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(equal_patterns(a[0], a[1], b[0], b[1]))


def _copy(pattern: Pattern | None) -> Pattern | None:
    if pattern is None:
        return None
    return (np.asarray(pattern[0], np.int64).copy(), np.asarray(pattern[1], np.int64).copy())


#: Structures differentiated recently, shared by every device derivative in the process.
STRUCTURE_CACHE = StructureCache()
