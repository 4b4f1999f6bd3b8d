"""The caches kept between calls: their limits, and clearing them (``diffqcp_np.caches``).

The memory they give back is measured in ``test_memory.py``.
"""

from __future__ import annotations

import importlib

import numpy as np
import scipy.sparse as sp

import diffqcp_np
from diffqcp_np import caches
from diffqcp_np.batch.runner import PROCESS_POOLS
from diffqcp_np.caches import BoundedCache
from test_ldl import _quasi_definite

_ldl = importlib.import_module("diffqcp_np.derivative._ldl")
spec = importlib.import_module("diffqcp_np.cones.spec")


def test_bounded_cache_keeps_the_most_recent_within_both_limits():
    cache = BoundedCache("test", max_entries=3, max_bytes=100)
    for key in "abc":
        cache.put(key, key.upper(), 30)
    assert cache.get("a") == "A"  # now the most recent
    cache.put("d", "D", 30)  # 120 bytes: "b", the least recently used, goes
    assert cache.get("b") is None and cache.info() == {
        "entries": 3, "bytes": 90, "max_entries": 3, "max_bytes": 100}
    cache.put("huge", "H", 101)  # larger than the byte limit: not kept, nothing evicted
    assert cache.get("huge") is None and cache.info()["entries"] == 3
    cache.put("a", "A2", 10)  # replacing an entry replaces its size
    assert cache.get("a") == "A2" and cache.info()["bytes"] == 70
    cache.limit(max_bytes=40)  # applied at once, oldest first
    assert cache.info()["bytes"] <= 40 and cache.get("a") == "A2"
    cache.limit(max_entries=0)
    assert cache.info()["entries"] == 0


def test_get_or_make_makes_once():
    cache = BoundedCache("test", max_entries=2)
    made = []
    for _ in range(3):
        assert cache.get_or_make("k", lambda: made.append(1) or "v", lambda v: 8) == "v"
    assert made == [1] and cache.info()["bytes"] == 8


def test_analysis_cache_counts_its_arrays_and_obeys_its_byte_limit():
    table = BoundedCache("analyses", max_entries=16)
    cache = _ldl.SymbolicCache(table)
    mats = [_quasi_definite(30 + i, 10, i) for i in range(3)]
    analyses = [_ldl.LDLSymbolic.analyse(m, np.arange(m.shape[0])) for m in mats]
    for mat, analysis in zip(mats, analyses):
        cache.store(mat, analysis)
    arrays = [mats[0].indptr, mats[0].indices, *(getattr(analyses[0], name) for name in (
        "perm", "Cp", "Ci", "position", "parent", "counts"))]
    one = sum(a.nbytes for a in arrays)
    assert table.info()["bytes"] > 2 * one  # three entries, the first of ``one`` bytes
    table.limit(max_bytes=table.info()["bytes"] - 1)  # the oldest goes
    assert cache.lookup(mats[0]) is None and cache.lookup(mats[2]) is analyses[2]


def test_the_process_wide_analysis_cache_is_the_documented_one():
    assert _ldl.SYMBOLIC_CACHE.table is caches.ldl_analyses
    assert caches.ldl_analyses.info()["max_bytes"] == 256 * 2**20


def test_large_cone_dicts_are_parsed_each_time_small_ones_once():
    caches.cone_specs.clear()
    small = {"l": 3, "q": [3] * 4}
    assert spec.as_cone_spec(small) is spec.as_cone_spec(dict(small))
    large = {"q": [3] * (caches.CONE_SPEC_ITEMS + 1)}
    first = spec.as_cone_spec(large)
    assert first == spec.as_cone_spec(large) and first is not spec.as_cone_spec(large)
    assert caches.info()["cone_specs"]["entries"] == 1


def test_clear_caches_empties_every_cache_and_shuts_the_pool_down():
    A = sp.csc_matrix(np.array([[1.0], [-1.0]]))  # -1 <= x <= 1, minimise x/2
    args = dict(As=[A] * 2, bs=[np.ones(2)] * 2, cs=[np.array([0.5])] * 2,
                cone_dicts=[{"l": 2}] * 2)
    diffqcp_np.solve_only_batch(**args, backend="processes", n_jobs_forward=2,
                                solve_method="Clarabel")
    assert PROCESS_POOLS._pool is not None
    assert caches.info()["batch_structures"]["entries"] >= 1
    diffqcp_np.clear_caches()
    assert all(info["entries"] == 0 and info["bytes"] == 0
               for info in caches.info().values())
    assert PROCESS_POOLS._pool is None
