"""The README's first example runs and its derivative matches finite differences."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_is_correct():
    pytest.importorskip("cvxpy")
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    ns = namespace
    import diffqcp_np

    rng = np.random.default_rng(5)
    dc = rng.standard_normal(ns["c"].size)
    dx = ns["D"](None, None, dc)[0]
    h = 1e-5
    args = (ns["A"], ns["b"])
    tight = dict(eps=1e-12, max_iters=100000)
    xp = diffqcp_np.solve_only(*args, ns["c"] + h * dc, ns["cone_dict"], P=ns["P"], **tight)[0]
    xm = diffqcp_np.solve_only(*args, ns["c"] - h * dc, ns["cone_dict"], P=ns["P"], **tight)[0]
    fd = (xp - xm) / (2 * h)
    assert np.linalg.norm(dx - fd) <= 1e-5 * np.linalg.norm(fd)
    assert ns["dA"].shape == ns["A"].shape and ns["dP"].shape == ns["P"].shape
