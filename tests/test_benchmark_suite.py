"""Smoke test of the benchmark suite (benchmarks/run_suite.py) at tiny sizes.

Every problem builder must give a problem that diffqcp_np solves and differentiates,
agreeing with the suite's dense reference; the measurement and report code runs once
in-process on one quick problem (plots only where matplotlib is installed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import diffqcp_np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import suite_problems as problems  # noqa: E402
import suite_report as report  # noqa: E402
import suite_runner as runner  # noqa: E402
from suite_reference import (  # noqa: E402
    TIGHT,
    DenseReference,
    FiniteDifferenceReference,
    random_direction,
)

TINY = {
    "all_cones": problems.all_cones,
    "lsq_simplex": lambda: problems.least_squares_simplex(8, 4),
    "sparse_lp": lambda: problems.sparse_lp_problem(20),
    "socp": lambda: problems.socp_blocks(5, [3, 4, 5]),
    "sdp": lambda: problems.sdp_block(4, 5),
    "entropy": lambda: problems.entropy_maximisation(10, 2),
    "logistic": lambda: problems.logistic_regression(30, 3),
    "power_projection": lambda: problems.power_projection(4),
    "pnorm": lambda: problems.pnorm_regression(8, 3),
    "qp": lambda: problems.sparse_qp(20),
}
NEEDS_CVXPY = ("entropy", "logistic")


@pytest.mark.parametrize("name", list(TINY))
def test_builder_gives_a_problem_we_solve_and_differentiate(name):
    if name in NEEDS_CVXPY:
        pytest.importorskip("cvxpy")
    p = TINY[name]()
    assert p.A.shape == (p.m, p.n) and p.b.shape == (p.m,) and p.c.shape == (p.n,)
    x, y, s, D, DT = diffqcp_np.solve_and_derivative(p.A, p.b, p.c, p.cone_dict, P=p.P,
                                                     solve_method="CLARABEL", **TIGHT)
    d = random_direction(p)
    ref = DenseReference(p, x, y, s, d)
    assert ref.jvp_error(np.concatenate(D(d.dA, d.db, d.dc))) < 1e-6
    assert ref.vjp_error(*DT(d.gx, d.gy, d.gs)) < 1e-6


@pytest.mark.parametrize("name", ["qp", "sparse_lp", "lsq_simplex"])
def test_finite_differences_agree_with_the_dense_reference(name):
    p = TINY[name]()
    x, y, s = diffqcp_np.solve_only(p.A, p.b, p.c, p.cone_dict, P=p.P,
                                    solve_method="CLARABEL", **TIGHT)
    d = random_direction(p)
    dense = DenseReference(p, x, y, s, d)
    fd = FiniteDifferenceReference(p, d)
    assert fd.jvp_error(dense.jvp) < 1e-5
    assert fd.vjp_error(*dense.vjp) < 1e-5


def test_registry_names_are_unique_and_found():
    for quick in (True, False):
        names = [spec.name for family in problems.FAMILIES
                 for spec in problems.specs(family, quick)]
        assert len(names) == len(set(names))
        assert all(problems.find_spec(name, quick).name == name for name in names)


class InProcess:
    """Runs the worker's tasks in this process (no time limit)."""

    def call(self, task: tuple) -> dict:
        return runner.run_task(task, runner.QUICK)


def test_measurements_and_report(tmp_path):
    pytest.importorskip("diffcp")
    name = problems.specs("socp", quick=True)[0].name
    row = runner.measure_spec(InProcess(), name)
    assert row["ours"]["err_dt"] < 1e-6 and row["reference"]["kind"] == "dense"
    assert all("dt" in row["diffcp"][mode] for mode in runner.DIFFCP_MODES)
    text = report.markdown([row], None, None, ["header"], [], "settings")
    assert name in text and "| problem |" in text
    pytest.importorskip("matplotlib")
    figures = report.plots([row], tmp_path, "suite_test")
    assert figures and all((tmp_path / f).stat().st_size > 0 for f in figures)
