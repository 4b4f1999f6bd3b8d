"""What the library keeps between calls, how much of it, and how to let it go.

Every cache is an LRU table shared by all threads of the process (a worker process of
the process back end has tables of its own), bounded in entries and, where its entries
can be large, in bytes (the NumPy arrays an entry holds):

``ldl_analyses``
    The fill-reducing ordering and symbolic analysis of the reduced system M per sparsity
    pattern (``direct`` mode): a derivative of a known pattern only factors numerically.
    At most 16 patterns and 256 MiB (an entry is about 1.5 times the size of the
    problem's ``A`` and ``P``: 16 MB for the suite's sparse QP with n = 10^5); a pattern
    whose analysis alone exceeds the byte limit is not kept.
``batch_structures``
    The structure of a same-structure batch (its patterns, parsed cones, the forward
    solver set up for it, the last batch's solutions for ``warm_starts="previous"``): 8.
``cone_specs``
    Parsed and laid-out cone dictionaries of plain ints and floats: 256 (dictionaries with
    more than :data:`CONE_SPEC_ITEMS` list entries are parsed each time, not kept).
``psd_index_maps``
    Index maps of the PSD vectorisation, per side: 64.
``layer_states``
    The derivative maps of :class:`diffqcp_np.jax_layer.CvxpyLayer`'s differentiated forward
    calls, by token, until their backward pass (a backward pass whose entry is gone solves
    its problems again): 8.

The process back end also keeps one pool of worker processes (and each worker its own
caches): :func:`clear_caches` shuts it down too; the next process batch starts a new
one.

Examples
--------
>>> import diffqcp_np
>>> diffqcp_np.caches.ldl_analyses.limit(max_bytes=64 * 2**20)  # keep at most 64 MiB
>>> diffqcp_np.clear_caches()                                   # release everything now
>>> diffqcp_np.caches.info()["ldl_analyses"]["entries"]
0
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

#: Cone dictionaries with more list entries than this are not kept by ``cone_specs``.
CONE_SPEC_ITEMS = 1024


class BoundedCache:
    """A thread-safe LRU table bounded in entries and in bytes.

    Parameters
    ----------
    name : str
    max_entries : int
    max_bytes : int or None
        Bound on the sum of the entries' sizes (as given to :meth:`put`); None for none.
    """

    def __init__(self, name: str, max_entries: int, max_bytes: int | None = None) -> None:
        self.name = name
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value kept for ``key`` (now the most recently used), or ``default``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return default
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: Any, nbytes: int = 0) -> None:
        """Keep ``value`` for ``key`` (``nbytes``: its size), dropping the least recently
        used entries beyond the limits; a value larger than ``max_bytes`` is not kept."""
        with self._lock:
            self._discard(key)
            if self.max_bytes is not None and nbytes > self.max_bytes:
                return
            self._entries[key] = (value, nbytes)
            self._bytes += nbytes
            self._trim()

    def get_or_make(self, key: Hashable, make: Callable[[], Any],
                    size: Callable[[Any], int] | None = None) -> Any:
        """The value kept for ``key``, or ``make()`` (then kept, sized by ``size``)."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            value = make()
            self.put(key, value, 0 if size is None else size(value))
        return value

    def limit(self, max_entries: int | None = None, max_bytes: int | None = None) -> None:
        """Change the limits (None keeps a limit as it is) and apply them now."""
        with self._lock:
            if max_entries is not None:
                self.max_entries = int(max_entries)
            if max_bytes is not None:
                self.max_bytes = int(max_bytes)
            self._trim()

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def info(self) -> dict[str, int | None]:
        """``entries``, ``bytes`` and the two limits."""
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._bytes,
                    "max_entries": self.max_entries, "max_bytes": self.max_bytes}

    def _discard(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1]

    def _trim(self) -> None:
        while self._entries and (len(self._entries) > self.max_entries or (
                self.max_bytes is not None and self._bytes > self.max_bytes)):
            _, (_, nbytes) = self._entries.popitem(last=False)
            self._bytes -= nbytes


_MISSING = object()

ldl_analyses = BoundedCache("ldl_analyses", max_entries=16, max_bytes=256 * 2**20)
batch_structures = BoundedCache("batch_structures", max_entries=8)
cone_specs = BoundedCache("cone_specs", max_entries=256)
psd_index_maps = BoundedCache("psd_index_maps", max_entries=64)
layer_states = BoundedCache("layer_states", max_entries=8)

_CACHES = (ldl_analyses, batch_structures, cone_specs, psd_index_maps, layer_states)
_RELEASES: list[Callable[[], None]] = []


def info() -> dict[str, dict[str, int | None]]:
    """Entries, bytes and limits of every cache, by name."""
    return {cache.name: cache.info() for cache in _CACHES}


def clear_caches() -> None:
    """Forget everything kept between calls and shut down the process back end's pool.

    Memory is released once nothing else holds it (a derivative still in use keeps its
    own factorisation and analysis). Later calls rebuild what they need.
    """
    for cache in _CACHES:
        cache.clear()
    for release in _RELEASES:
        release()


def on_clear(release: Callable[[], None]) -> None:
    """Have :func:`clear_caches` call ``release`` (e.g. the process back end shutting its
    pool down), after the caches are cleared."""
    if release not in _RELEASES:
        _RELEASES.append(release)


def array_bytes(*arrays) -> int:
    """The bytes of the given NumPy arrays (None counts as 0)."""
    return sum(a.nbytes for a in arrays if a is not None)
