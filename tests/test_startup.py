"""Start-up: a light import, no compilation before use, a complete warm-up, the demo's
messages and the command line. (The timings are measured in benchmarks/bench_startup.py.)
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest

import diffqcp_np
from diffqcp_np import __main__ as cli
from diffqcp_np._warm_up import FRAMEWORK_MODULES, compilations, warm_up

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "PYTHONPATH": str(ROOT),
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *(["-c", code] if code else []), *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_import_loads_no_heavy_module_and_nothing_compiles_before_use(tmp_path):
    code = textwrap.dedent("""
        import json, sys
        import diffqcp_np
        light = [m for m in ("numba", "scipy", "scs", "clarabel", "ecos") if m in sys.modules]
        for name in diffqcp_np.__all__:
            getattr(diffqcp_np, name)
        from diffqcp_np._warm_up import kernels
        found = kernels()
        compiled = [name for name, kernel in found.items() if kernel.signatures]
        print(json.dumps({"light": light, "kernels": len(found), "compiled": compiled}))
    """)
    result = _python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["light"] == []  # import diffqcp_np alone loads none of them
    assert out["kernels"] > 50  # every module was imported, with its kernels
    assert out["compiled"] == []  # no eager signature, nothing compiled or loaded


def test_public_names_resolve_lazily():
    assert set(diffqcp_np.__all__) <= set(dir(diffqcp_np))
    assert diffqcp_np.solve_and_derivative is diffqcp_np.cone_program.solve_and_derivative
    assert diffqcp_np.SolverError is diffqcp_np.solvers.SolverError
    importlib.import_module("diffqcp_np.derivative.lpgd")  # the subpackage hides nothing
    assert diffqcp_np.derivative is diffqcp_np.cone_program.derivative
    with pytest.raises(AttributeError, match="no_such_name"):
        diffqcp_np.no_such_name  # noqa: B018


def test_warm_up_reaches_every_kernel(tmp_path):
    """In a fresh interpreter (here the earlier tests have compiled kernels of their own),
    with the package's own cache: mostly loads once the suite has run."""
    code = ("import json; from diffqcp_np._warm_up import warm_up; "
            "print(json.dumps(warm_up(out=None)['missing']))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


#: Modules whose kernels the demo's problem does not need: the ordering and LDLᵀ of the
#: reduced system (its K is small enough to be factored dense), the exponential and power
#: cones (it has none).
NOT_NEEDED_BY_THE_DEMO = tuple(f"diffqcp_np.{name}." for name in (
    "derivative._amd_numba", "derivative._ldl", "derivative._block_solve_numba",
    "derivative._reduced_numba", "cones._exp_numba", "cones._power_numba"))


def test_first_small_call_compiles_only_the_kernels_it_needs(tmp_path):
    """A fresh install (empty cache): the demo's solve_and_derivative, D and DT compile
    what the problem needs and none of :data:`NOT_NEEDED_BY_THE_DEMO`."""
    code = textwrap.dedent("""
        import json
        from diffqcp_np import solve_and_derivative
        from diffqcp_np.__main__ import TIGHT, demo_problem
        from diffqcp_np._warm_up import compilations
        A, b, c, cone_dict, P = demo_problem()
        with compilations() as compiled:
            x, y, s, D, DT = solve_and_derivative(A, b, c, cone_dict, P=P, **TIGHT)
            D(None, b, c)
            DT(x, None, None)
        print(json.dumps(compiled))
    """)
    result = _python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    compiled = json.loads(result.stdout)
    assert any(name.startswith("diffqcp_np.cones._soc_numba.") for name in compiled)
    assert [name for name in compiled if name.startswith(NOT_NEEDED_BY_THE_DEMO)] == []


def test_unreached_kernels_are_reported():
    @numba.njit(cache=False)
    def never_called(x):
        return x

    import diffqcp_np._warm_up as module

    module.never_called_kernel = never_called
    never_called.py_func.__module__ = module.__name__
    try:
        assert "diffqcp_np._warm_up.never_called_kernel" in module.not_compiled()
    finally:
        del module.never_called_kernel


def test_compilation_is_announced_only_when_it_happens(capsys):
    @numba.njit(cache=False)
    def fresh(x):
        return x + 1.0

    fresh.py_func.__module__ = "diffqcp_np.test_kernel"  # counted as one of ours
    with compilations(on_first=cli._announce_compilation) as compiled:
        fresh(1.0)
    assert compiled == ["diffqcp_np.test_kernel." + fresh.py_func.__qualname__]
    assert "compiling the Numba kernels" in capsys.readouterr().out
    with compilations(on_first=cli._announce_compilation) as compiled:
        fresh(2.0)  # compiled already: silent
    assert not compiled and capsys.readouterr().out == ""


def test_demo_mentions_jit_only_when_it_compiled(capsys):
    warm_up(out=None)  # every kernel the demo needs is compiled in this process
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "OK: derivative matches finite differences" in out
    assert "JIT" not in out and "compiling" not in out


def test_help_prints_usage(tmp_path):
    result = _python("", tmp_path, "-m", "diffqcp_np", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m diffqcp_np")
    assert "--warm-up" in result.stdout


def test_sort_segment_matches_numpy():
    from diffqcp_np.derivative._reduced_numba import _sort_segment

    rng = np.random.default_rng(0)
    for size in (0, 1, 2, 3, 7, 100, 1000):
        indices = rng.permutation(5000)[:size + 6].astype(np.int64)
        data = indices * 0.5
        got_indices, got_data = indices.copy(), data.copy()
        _sort_segment(got_indices, got_data, 3, 3 + size)
        want = indices.copy()
        want[3:3 + size] = np.sort(indices[3:3 + size])
        np.testing.assert_array_equal(got_indices, want)
        np.testing.assert_array_equal(got_data, want * 0.5)


@pytest.mark.parametrize("name", sorted(FRAMEWORK_MODULES))
def test_modules_left_out_of_the_kernel_walk_define_no_kernel(name):
    """The walk skips the layer adapters (their frameworks are optional extras): that
    hides no kernel."""
    from numba.core.dispatcher import Dispatcher

    pytest.importorskip(name.split(".")[1].removesuffix("_layer"))  # jax / torch
    module = importlib.import_module(name)
    assert not [key for key, obj in vars(module).items() if isinstance(obj, Dispatcher)]
