"""Every code block of README.md runs as written, and its results are right.

Each ``python`` block runs on its own, in a fresh namespace (a reader copies one block);
blocks that import CVXPY are skipped where it is not installed. The ``bash`` blocks
install extras: each extra they name exists in pyproject.toml.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import diffqcp_np

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README.read_text(), re.S | re.M)
PYTHON = [code for language, code in BLOCKS if language == "python"]


def _run(code: str) -> dict:
    if "import cvxpy" in code:
        pytest.importorskip("cvxpy")
    namespace: dict = {"__name__": "readme"}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def _block(first_line: str) -> str:
    matches = [code for code in PYTHON if first_line in code]
    assert len(matches) == 1, first_line
    return matches[0]


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_every_python_block_runs_on_its_own(index):
    _run(PYTHON[index])


def test_blocks_are_found():
    assert len(PYTHON) >= 2 and any(language == "bash" for language, _ in BLOCKS)


def test_first_example_is_correct():
    ns = _run(_block("A small QP built with CVXPY"))
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


def test_batch_example_gives_each_problems_gradient():
    ns = _run(_block("solve_and_derivative_batch("))
    for i in range(len(ns["As"])):
        x, y, s, D, DT = diffqcp_np.solve_and_derivative(
            ns["As"][i], ns["bs"][i], ns["cs"][i], ns["cone_dicts"][i], P=ns["Ps"][i],
            solve_method="Clarabel")
        np.testing.assert_allclose(ns["xs"][i], x, atol=1e-6)
        assert abs(ns["xs"][i].sum() - 1.0) < 1e-6 and ns["xs"][i].min() > -1e-6
        dA, db, dc = DT(ns["dxs"][i], None, None)
        np.testing.assert_allclose(ns["dcs"][i], dc, atol=1e-6)
        np.testing.assert_allclose(ns["dbs"][i], db, atol=1e-6)


def test_install_commands_name_existing_extras():
    tomllib = pytest.importorskip("tomllib")
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                 ["optional-dependencies"])
    named = {extra for language, code in BLOCKS if language == "bash"
             for group in re.findall(r'"\.\[([^\]]*)\]"', code) for extra in group.split(",")}
    assert named and named <= extras
    extras_table = re.search(r"^\| extra \|.*?\n\n", README.read_text(), re.S | re.M).group()
    first_cells = re.findall(r"^\| (`[^|]*`) \|", extras_table, re.M)
    table = {name for cell in first_cells for name in re.findall(r"`([\w-]+)`", cell)}
    assert {"cvxpy", "layers", "test-layers", "test-gpu"} <= table <= extras | {"lint"}
