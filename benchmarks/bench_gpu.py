"""The device derivative beside the CPU path, in one run (issue 19's benchmarks).

1. The backward pass of 10^4 small same-structure QPs (n = 20, m = 40,
   ``bench_batch.small_qps``): the CPU batch's ``DT_batch`` (the batched dense
   derivative of ``solve_and_derivative_batch``) against the device's setup (cone
   blocks, M, one cuDSS uniform-batch factorisation) and one stacked VJP. Target on an
   H100/H200: backward ≤ 10 ms.
2. One sparse QP with n ≈ 5·10^4 (``suite_problems.sparse_qp``) at its known solution:
   ``derivative(...)`` and one ``DT`` on the CPU and with ``device="cuda"``. Target:
   ≤ 50 ms.

Every timing is a median over ``--repeats`` calls after one warm-up call (compilation
and the structure's analysis excluded from the medians; the first call is reported
apart), the device synchronised before each clock read. The environment (device,
driver, CuPy, nvmath-python, cuDSS versions, CPU) is recorded with the results.

``--stand-in`` runs the device path on NumPy with the host build of the kernels and
the cuDSS stand-ins (for checking this script without a GPU: its timings are not GPU
timings). Usage::

    python benchmarks/bench_gpu.py [--quick] [--stand-in] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import diffqcp_np
from diffqcp_np.gpu import engine as engines

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS  # noqa: E402
from bench_batch import small_qps  # noqa: E402
from suite_problems import sparse_qp  # noqa: E402

#: Targets on an H100/H200 (issue 19): backward of 10^4 small QPs, of one sparse QP.
TARGETS = {"small_batch": 10e-3, "sparse_qp": 50e-3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (200 QPs, n = 2000) and 3 repeats")
    parser.add_argument("--stand-in", action="store_true",
                        help="the device path on NumPy with cuDSS stand-ins (no GPU)")
    parser.add_argument("--count", type=int, default=None, help="small QPs (10^4)")
    parser.add_argument("--large-n", type=int, default=None, help="sparse QP size (5*10^4)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None,
                        help="folder of gpu.json and gpu.md (default benchmarks/results; "
                             "required with --stand-in)")
    args = parser.parse_args(argv)
    if args.stand_in and args.out is None:
        parser.error("--stand-in needs --out (its timings are not GPU results)")
    args.count = args.count or (200 if args.quick else 10_000)
    args.large_n = args.large_n or (2_000 if args.quick else 50_000)
    args.repeats = args.repeats or (3 if args.quick else 10)
    return args


def stand_in_engine() -> engines.Engine:
    """NumPy, the g++ build of the kernels (the test suite's builder), the stand-ins."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "gpu_host"))
    from host_build import HostKernels, build

    return engines.host_engine(HostKernels(build("serial", Path(tempfile.mkdtemp()))))


def _query(command: list[str]) -> str | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def cudss_version() -> str | None:
    """cuDSS's version by ``get_property`` (None without nvmath or its library)."""
    try:
        from nvmath.bindings import cudss
        from nvmath.bindings._internal.utils import LibraryPropertyType  # type: ignore

        return ".".join(str(cudss.get_property(int(getattr(LibraryPropertyType, k))))
                        for k in ("MAJOR_VERSION", "MINOR_VERSION", "PATCH_LEVEL"))
    except Exception:  # noqa: BLE001 - missing pieces: unknown
        try:
            from nvmath.bindings import cudss

            return ".".join(str(cudss.get_property(k)) for k in range(3))
        except Exception:  # noqa: BLE001
            return None


def environment(engine: engines.Engine) -> dict[str, Any]:
    """The machine and the versions the run used."""
    import scipy

    from diffqcp_np import gpu

    return {"engine": engine.name, "python": platform.python_version(),
            "machine": platform.machine(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "numpy": np.__version__, "scipy": scipy.__version__,
            "diffqcp_np": diffqcp_np.__version__, **gpu.versions(), "cudss": cudss_version(),
            "nvidia_smi": _query(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader"])}


def synchronize(engine: engines.Engine) -> None:
    if engine.name == "cuda":
        engine.xp.cuda.Device().synchronize()


def timed(fn: Callable[[], Any], repeats: int, engine: engines.Engine | None = None
          ) -> dict[str, float]:
    """First-call seconds and the median of ``repeats`` further calls."""
    def once():
        start = time.perf_counter()
        fn()
        if engine is not None:
            synchronize(engine)
        return time.perf_counter() - start

    first = once()
    return {"first": first, "median": statistics.median(once() for _ in range(repeats))}


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def small_batch(count: int, repeats: int, engine: engines.Engine) -> dict[str, Any]:
    """Backward pass of ``count`` small QPs on the CPU batch and on the device."""
    from diffqcp_np.gpu.api import prepare
    from diffqcp_np.gpu.derivative import DeviceBatchDerivative

    As, bs, cs, _, cones, Ps = small_qps(count)
    xs, ys, ss, _, DT = diffqcp_np.solve_and_derivative_batch(As, bs, cs, cones, Ps=Ps)
    rng = np.random.default_rng(0)
    gx = rng.standard_normal((count, As[0].shape[1]))
    cpu = timed(lambda: DT(list(gx), None, None, return_dP=True), repeats)
    expected = DT(list(gx), None, None, return_dP=True)
    with engines.use(engine):
        structure, *_ = prepare(As[0], cones[0], Ps[0], engine)
    stacks = [engine.asarray(np.stack(v)) for v in
              ([A.data for A in As], xs, ys, ss, [P.data for P in Ps])]

    def setup():
        return DeviceBatchDerivative(structure, engine, *stacks[:4], P_values=stacks[4])

    device_setup = timed(setup, repeats, engine)
    batch = setup()
    g = engine.asarray(gx)
    device_vjp = timed(lambda: batch.vjp(g, None, None), repeats, engine)
    dA, db, dc, dP = (engine.to_host(v) for v in batch.vjp(g, None, None))
    error = max(relative(dA, np.stack([a.data for a in expected[0]])),
                relative(db, np.stack(expected[1])), relative(dc, np.stack(expected[2])),
                relative(dP, np.stack([p.data for p in expected[3]])))
    return {"problems": count, "n": As[0].shape[1], "m": As[0].shape[0],
            "cpu_DT_batch": cpu, "device_setup": device_setup, "device_vjp": device_vjp,
            "device_backward": device_setup["median"] + device_vjp["median"],
            "paths": sorted(set(batch.paths)), "relative_error": error}


def large_qp(n: int, repeats: int, engine: engines.Engine) -> dict[str, Any]:
    """``derivative(...)`` and one ``DT`` of a sparse QP on the CPU and on the device."""
    problem = sparse_qp(n)
    x, y, s = problem.solution
    args = (problem.A, problem.b, problem.c, problem.cone_dict, x, y, s)
    gx = np.random.default_rng(1).standard_normal(problem.n)
    out: dict[str, Any] = {"n": problem.n, "m": problem.m, "nnz_A": problem.A.nnz}
    out["cpu_setup"] = timed(lambda: diffqcp_np.derivative(*args, P=problem.P), repeats)
    _, DT = diffqcp_np.derivative(*args, P=problem.P)
    out["cpu_DT"] = timed(lambda: DT(gx, None, None), repeats)
    expected = DT(gx, None, None)
    with engines.use(engine):
        device_args = [engine.asarray(v) for v in (problem.b, problem.c, x, y, s)]

        def setup():
            return diffqcp_np.derivative(problem.A, *device_args[:2], problem.cone_dict,
                                         *device_args[2:], P=problem.P, device="cuda")

        out["device_setup"] = timed(setup, repeats, engine)
        _, DT_device = setup()
        g = engine.asarray(gx)
        out["device_DT"] = timed(lambda: DT_device(g, None, None), repeats, engine)
        got = DT_device(g, None, None)
    out["device_backward"] = out["device_setup"]["median"] + out["device_DT"]["median"]
    out["relative_error"] = max(relative(engine.to_host(got[0].data), expected[0].data),
                                relative(engine.to_host(got[1]), expected[1]))
    return out


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.3g} ms"


def report(results: dict[str, Any]) -> str:
    """The results as Markdown."""
    env, small, large = results["environment"], results["small_batch"], results["sparse_qp"]
    lines = ["# GPU path beside the CPU path", "",
             f"Engine `{env['engine']}`" + (" (stand-in on NumPy: NOT GPU timings)"
                                            if env["engine"] != "cuda" else ""),
             f"Device: {env['nvidia_smi']}; CuPy {env['cupy']}, CUDA runtime "
             f"{env['cuda_runtime']}, nvmath {env['nvmath']}, cuDSS {env['cudss']}; CPU "
             f"{env['cpu']} x {env['cpu_count']}; NumPy {env['numpy']}, SciPy {env['scipy']}",
             "", "| problem | CPU backward | device setup | device VJP | device backward "
             "| target | met | rel. error |", "|---|---|---|---|---|---|---|---|"]
    rows = [(f"{small['problems']} QPs n={small['n']}, m={small['m']}",
             small["cpu_DT_batch"]["median"], small["device_setup"]["median"],
             small["device_vjp"]["median"], small["device_backward"],
             TARGETS["small_batch"], small["relative_error"]),
            (f"sparse QP n={large['n']}, m={large['m']}",
             large["cpu_setup"]["median"] + large["cpu_DT"]["median"],
             large["device_setup"]["median"], large["device_DT"]["median"],
             large["device_backward"], TARGETS["sparse_qp"], large["relative_error"])]
    for name, cpu, setup, vjp, total, target, error in rows:
        met = ("n/a" if env["engine"] != "cuda" else "yes" if total <= target else "no")
        lines.append(f"| {name} | {_ms(cpu)} | {_ms(setup)} | {_ms(vjp)} | {_ms(total)} | "
                     f"{_ms(target)} | {met} | {error:.1e} |")
    lines += ["", "Medians over the repeats after one warm-up call; CPU backward of the "
              "batch is its DT_batch (the batch's derivatives are set up in its forward "
              "pass), of the sparse QP derivative(...) plus one DT."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    engine = stand_in_engine() if args.stand_in else engines.device_engine()
    results = {"environment": environment(engine),
               "small_batch": small_batch(args.count, args.repeats, engine),
               "sparse_qp": large_qp(args.large_n, args.repeats, engine)}
    out = args.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(results, indent=2, default=str))
    text = report(results)
    (out / "gpu.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
