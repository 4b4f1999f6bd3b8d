"""The kernel files compiled for the GPU without a GPU: by NVRTC (the compiler CuPy's
RawModule uses) for sm_80 and sm_90 with CuPy's options, with and without FMA
contraction, and by nvcc with ptxas's resource report (registers, spills, stack)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from diffqcp_np.gpu._modules import compile_options, kernel_source
from diffqcp_np.gpu._signatures import KERNELS, SOURCES

ARCHS = ("80", "90")
#: Registers per thread allowed (the largest kernel uses 68 with nvcc 13.0 for sm_90).
MAX_REGISTERS = 96


@pytest.fixture(scope="module")
def nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        pytest.skip(f"no NVRTC (pip package cuda-bindings with nvidia-cuda-nvrtc): {exc}")
    try:
        nvrtc.nvrtcVersion()
    except Exception as exc:  # noqa: BLE001 - the bindings import, the library is missing
        pytest.skip(f"NVRTC library not loadable: {exc}")
    return nvrtc


def nvrtc_compile(nvrtc, source: str, name: str, options: list[str]) -> tuple[bool, str, bytes]:
    """``(ok, log, PTX or cubin)`` of one NVRTC compilation."""
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    try:
        (result,) = nvrtc.nvrtcCompileProgram(prog, len(options), [o.encode() for o in options])
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        ok = result == nvrtc.nvrtcResult.NVRTC_SUCCESS
        binary = b""
        if ok:
            ptx = any(o.startswith("-arch=compute_") for o in options)
            get_size, get = ((nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX) if ptx else
                             (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN))
            _, size = get_size(prog)
            binary = b" " * size
            get(prog, binary)
        return ok, log.decode(errors="replace"), binary
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def cupy_options(nvrtc, arch: str, fmad: bool) -> list[str]:
    """What CuPy 14.2's RawModule passes to NVRTC (cupy/cuda/compiler.py): our options,
    -ftz=true (single precision only), -arch from the device, the execution-space flag,
    and --pch with NVRTC 12.8 or newer."""
    _, major, minor = nvrtc.nvrtcVersion()
    options = [*compile_options(fmad), "-ftz=true", arch, "--device-as-default-execution-space"]
    return options + (["--pch"] if (major, minor) >= (12, 8) else [])


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fmad", [True, False], ids=["fma", "no-fma"])
def test_nvrtc_compiles_cubin(nvrtc, source, arch, fmad):
    ok, log, cubin = nvrtc_compile(nvrtc, kernel_source(source), source,
                                   cupy_options(nvrtc, f"-arch=sm_{arch}", fmad))
    assert ok, log
    assert cubin[:4] == b"\x7fELF"


@pytest.mark.parametrize("source", SOURCES)
def test_ptx_exports_every_kernel_and_no_fma_build_has_no_fma(nvrtc, source):
    """``--fmad=false`` leaves no FMA in code of ours; libdevice's ``exp``, ``log`` and
    ``pow`` (exp.cu, power.cu) use FMAs explicitly, so only kernels without them can be
    bitwise equal to the CPU on a GPU."""
    names = {name for name, sig in KERNELS.items() if sig.source == source}
    counts = {}
    for fmad in (True, False):
        ok, log, ptx = nvrtc_compile(nvrtc, kernel_source(source), source,
                                     cupy_options(nvrtc, "-arch=compute_90", fmad))
        assert ok, log
        text = ptx.decode()
        assert set(re.findall(r"\.entry\s+(\w+)\s*\(", text)) == names  # unmangled names
        counts[fmad] = text.count("fma.rn.f64")
    if re.search(r"\b(exp|log|pow)\s*\(", kernel_source(source)):
        assert counts[False] < counts[True]
    else:
        assert counts[False] == 0 < counts[True]


def test_nvrtc_reports_errors(nvrtc):
    ok, log, _ = nvrtc_compile(nvrtc, kernel_source("orthant_soc.cu") + "\nint broken = rho;",
                               "broken.cu", cupy_options(nvrtc, "-arch=sm_90", True))
    assert not ok and 'identifier "rho" is undefined' in log


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")
@pytest.mark.parametrize("source", SOURCES)
def test_nvcc_registers_and_no_spills(source, tmp_path):
    path = tmp_path / source
    path.write_text(kernel_source(source))
    result = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-Xptxas", "-v", "-o",
                             str(tmp_path / "out.cubin"), str(path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = result.stderr
    kernels = {name for name, sig in KERNELS.items() if sig.source == source}
    properties = dict(re.findall(r"Function properties for (\w+)\n\s*(.*)", report))
    assert kernels <= set(properties)
    for text in properties.values():
        assert text.startswith("0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads")
    registers = [int(r) for r in re.findall(r"Used (\d+) registers", report)]
    assert len(registers) == len(kernels) and max(registers) <= MAX_REGISTERS
