"""Every script in examples/ runs to the end, where what it needs is installed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

#: What each example imports beyond the runtime install (the README's table of examples
#: says which extra brings it).
NEEDS = {
    "batch.py": [],
    "cvxpy_requires_grad.py": ["cvxpy"],
    "cvxpylayers_torch.py": ["cvxpylayers", "torch"],
    "diffcp_style.py": ["cvxpy"],
    "jax_jit_vmap.py": ["cvxpylayers", "jax"],
    "smoothed_lp_layer.py": ["cvxpylayers", "torch"],
}


def test_every_example_is_listed():
    assert sorted(NEEDS) == sorted(path.name for path in EXAMPLES.glob("*.py"))
    readme = (ROOT / "README.md").read_text()
    for name in NEEDS:
        assert f"`examples/{name}`" in readme


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_example_runs(name, tmp_path):
    missing = [module for module in NEEDS[name] if importlib.util.find_spec(module) is None]
    if missing:
        pytest.skip(f"examples/{name} needs {', '.join(missing)}, not installed")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.strip()
    ours = [line for line in result.stderr.splitlines()
            if "Warning" in line and ("examples" in line or "diffqcp_np" in line)]
    assert not ours, ours
