"""Memory that must not grow: repeated calls in a subprocess (``memory_child.py``), with
a bound well above the noise of the resident set (a few MB) and well below what the
faults fixed here leaked.

* A sparse LU made on a worker thread and dropped on another: SciPy's SuperLU object
  leaked its whole factor there (about 0.8 MB per factor of the child's matrix, 237 MB
  over its 300 factors); :class:`~diffqcp_np.derivative._sparse_lu.SparseLU` nothing.
* Derivatives on the sparse-LU path (PSD cones) set up on new worker threads, as a
  threaded batch does, and dropped in the calling thread: 92 MB over 25 batches of 20
  before, under 1 MB now.
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


def growth(names: list[str]) -> dict[str, int]:
    """Scenario name -> bytes the child's resident set grew over its repetitions."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(CHILD.parent.parent), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-W", "ignore", str(CHILD), *names],
                         capture_output=True, text=True, env=env, timeout=600, check=True)
    return {words[1]: int(words[2]) for words in map(str.split, out.stdout.splitlines())
            if words and words[0] == "growth"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_sparse_lu_paths_do_not_grow_the_process():
    names = ["lu-across-threads", "threaded-lu-derivatives"]
    result = growth(names)
    assert sorted(result) == sorted(names)
    for name, grown in result.items():
        assert grown < BOUND, f"{name}: the process grew by {grown / 2**20:.1f} MB"
