"""The kernel table against the ``.cu`` sources, and the constants the kernels copy
from the Numba modules against those modules."""

from __future__ import annotations

import re

import numpy as np
import pytest

from diffqcp_np.cones import _exp_numba, _power_numba, _soc_numba, _sym3_eigen_numba, reduced
from diffqcp_np.gpu._modules import kernel_source
from diffqcp_np.gpu._signatures import (
    KERNELS,
    MAX_GRID,
    PRELUDE,
    SOURCES,
    Param,
    launch_geometry,
)
from host_build import KERNEL_DIR

_DECLARATION = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_DEFINE = re.compile(r"^#define\s+(DQ_\w+)\s+([^/\n]+?)\s*(?://.*)?$", re.MULTILINE)


def declared_kernels() -> dict[str, tuple[str, tuple[str, ...]]]:
    """``name -> (file, normalised parameter declarations)`` read from the sources."""
    out = {}
    for path in sorted(KERNEL_DIR.glob("*.cu")):
        for name, params in _DECLARATION.findall(path.read_text()):
            assert name not in out, f"kernel {name} defined twice"
            out[name] = (path.name, tuple(Param.parse(p).c_declaration
                                          for p in params.split(",")))
    return out


def test_table_matches_the_sources():
    declared = declared_kernels()
    table = {name: (sig.source, tuple(p.c_declaration for p in sig.params))
             for name, sig in KERNELS.items()}
    assert table == declared
    assert set(SOURCES) | {PRELUDE} == {p.name for p in KERNEL_DIR.glob("*.cu")}


def test_work_sizes_are_integer_parameters():
    for sig in KERNELS.values():
        params = {p.name: p for p in sig.params}
        for name in sig.work:
            assert not params[name].pointer and params[name].base == "long long", sig.name


def test_parameter_parser_rejects_unsupported_types():
    with pytest.raises(ValueError, match="unsupported kernel parameter type"):
        Param.parse("const float* x")
    assert Param.parse("const double* __restrict__ v").c_declaration == "const double* v"


def test_launch_geometry():
    assert launch_geometry(0) == (1, 128)
    assert launch_geometry(129) == (2, 128)
    assert launch_geometry(10**12) == (MAX_GRID, 128)


def defines() -> dict[str, float]:
    source = "\n".join(kernel_source(s) for s in SOURCES)
    out = {}
    for name, value in _DEFINE.findall(source):
        if re.fullmatch(r"[-+()*/ .0-9e]+", value):
            out[name] = eval(value, {"__builtins__": {}})  # noqa: S307 - numbers only
    return out


def test_constants_match_the_numba_kernels():
    c = defines()
    expected = {
        "DQ_NULL_EIGENVALUE": reduced.NULL_EIGENVALUE,
        "DQ_SOC_INTERIOR": _soc_numba.SOC_INTERIOR, "DQ_SOC_POLAR": _soc_numba.SOC_POLAR,
        "DQ_SOC_BOUNDARY": _soc_numba.SOC_BOUNDARY,
        "DQ_EXP_RHO_MAX": _exp_numba._RHO_MAX, "DQ_EXP_RHO_FACE": _exp_numba._RHO_FACE,
        "DQ_EXP_MAX_ITERS": _exp_numba._MAX_ITERS, "DQ_EXP_NOISE": _exp_numba._NOISE,
        "DQ_EXP_STEP_TOL": _exp_numba._STEP_TOL, "DQ_EXP_BOUND_SLACK": _exp_numba._BOUND_SLACK,
        "DQ_EXP_IN_CONE": _exp_numba._IN_CONE, "DQ_EXP_IN_POLAR": _exp_numba._IN_POLAR,
        "DQ_EXP_NEGATIVE": _exp_numba._NEGATIVE, "DQ_EXP_FACE": _exp_numba._FACE,
        "DQ_EXP_POLAR_FACE": _exp_numba._POLAR_FACE, "DQ_EXP_ROOT": _exp_numba._ROOT,
        "DQ_POW_NEWTON_TOL": _power_numba._NEWTON_TOL,
        "DQ_POW_MAX_ITERS": _power_numba._MAX_ITERS, "DQ_POW_TINY": _power_numba._TINY,
        "DQ_SYM3_MAX_SWEEPS": _sym3_eigen_numba._MAX_SWEEPS,
    }
    kernel_only = {"DQ_POW_IN_CONE", "DQ_POW_IN_POLAR", "DQ_POW_ON_PLANE", "DQ_POW_BOUNDARY"}
    assert set(c) == set(expected) | kernel_only
    for name, value in expected.items():
        assert np.float64(c[name]) == np.float64(value), name
