"""Memory that must not grow: repeated calls in a subprocess (``memory_child.py``), with
a bound well above the noise of the resident set (a few MB) and well below what the
faults fixed here leaked.

* A sparse LU made on a worker thread and dropped on another: SciPy's SuperLU object
  leaked its whole factor there (about 0.8 MB per factor of the child's matrix, 237 MB
  over its 300 factors); :class:`~diffqcp_np.derivative._sparse_lu.SparseLU` nothing.
* Derivatives on the sparse-LU path (PSD cones) set up on new worker threads, as a
  threaded batch does, and dropped in the calling thread: 92 MB over 25 batches of 20
  before, under 1 MB now.
* Derivatives of 24 new sparsity patterns with the analysis cache limited to 16 MiB: its
  16 entries alone held 91 MB of them before it had a byte limit.
* ``clear_caches`` gives the analyses back to the system once the derivatives are gone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("memory_child.py")
#: Growth (bytes) above which a scenario counts as leaking.
BOUND = 20 * 2**20


SCENARIOS = ["lu-across-threads", "threaded-lu-derivatives", "analysis-byte-budget"]


@pytest.fixture(scope="module")
def child_output() -> list[list[str]]:
    """The child's report lines, split (one process for every scenario)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(CHILD.parent.parent), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-W", "ignore", str(CHILD), "release", *SCENARIOS],
                         capture_output=True, text=True, env=env, timeout=600, check=True)
    return [line.split() for line in out.stdout.splitlines()]


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc/self/statm")


def test_repeated_work_does_not_grow_the_process(child_output):
    growth = {words[1]: int(words[2]) for words in child_output if words[0] == "growth"}
    assert sorted(growth) == sorted(SCENARIOS)
    for name, grown in growth.items():
        assert grown < BOUND, f"{name}: the process grew by {grown / 2**20:.1f} MB"


def test_clear_caches_gives_the_analyses_back(child_output):
    (released, cached), = [map(int, words[1:]) for words in child_output
                           if words[0] == "released"]
    assert cached > 40 * 2**20  # 8 patterns of about 6 MB each
    assert released > 0.8 * cached
