"""Benchmark: batches of small problems, diffqcp_np beside Moreau, diffcp and diffqcp.

The batch is ``bench_batch.small_qps`` (n = 20, m = 40: 5 equality and 35 inequality
rows, one pattern, positive definite P) at B = 100, 1000 and 10 000, plus a batch of
small SOCPs (n = 20, 2 equality rows, 8 inequalities and three second-order cones of
size 5, positive definite P). Every tool runs in the same process, the tools taking
turns in every repeat (medians over the repeats; warm-up excluded), once per thread
count, each thread count in its own process (``RAYON_NUM_THREADS`` for Moreau,
``n_jobs_*`` for diffqcp_np and diffcp, BLAS pinned to one thread):

* diffqcp_np: forward (``solve_only_batch``: validation, the batched solver — on the
  QPs ``"auto"`` and its dual active-set method, on the SOCPs ``"IPM"``, its
  interior-point method — and the per-problem results), forward with the derivative set
  up (``solve_and_derivative_batch``), one ``DT_batch`` (with ``dP``), and the
  per-problem Clarabel path (``solve_method="Clarabel"``) for comparison;
* Moreau 0.4.1 ``CompiledSolver`` (CPU; structure compiled once, outside the timings):
  ``setup`` + ``solve`` forward, ``backward`` (it needs ``enable_grad=True``);
* diffcp 1.1.9 (B ≤ 1000: it takes ~2 ms a problem): ``solve_and_derivative_batch`` and
  one ``DT_batch`` in its default lsqr mode on the LP with the same A, b and cones (its
  lsqr mode has no P);
* diffqcp 0.4.4 (B = 100): one VJP per problem (``HostQCP.vjp``, JAX on the CPU) at
  our solutions; it has no forward solver. It installs on Python 3.11 but does not
  import there (it uses Python 3.12's ``type`` statement): the report then says so.

Usage::

    python benchmarks/bench_peers.py [--sizes 100 1000 10000] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from _common import RESULTS, write_result
from bench_batch import interleaved_medians, small_qps

HERE = Path(__file__).parent


def small_socps(count: int, n: int = 20, zero: int = 2, nonneg: int = 8,
                soc: tuple = (5, 5, 5), seed: int = 0, solutions: bool = False):
    """Same-structure SOCPs with positive definite P, each with a known solution drawn
    on its own (so that every member has its own faces): ``As, bs, cs, cone_dicts, Ps``
    and, with ``solutions``, the known ``xs, ys, ss`` too."""
    import diffqcp_np.cones as cones_mod

    rng = np.random.default_rng(seed)
    cone_dict = {"z": zero, "l": nonneg, "q": list(soc)}
    spec = cones_mod.as_cone_spec(cone_dict)
    m = spec.dim
    pattern = sp.csc_matrix(sp.random(m, n, density=0.3, random_state=rng) + sp.eye(m, n))
    pattern.sort_indices()
    As, bs, cs, Ps, known = [], [], [], [], ([], [], [])
    for _ in range(count):
        A = pattern.copy()
        A.data = rng.standard_normal(A.nnz)
        F = rng.standard_normal((n, n)) / np.sqrt(n)
        P = sp.csc_matrix(F @ F.T + 0.1 * np.eye(n))
        v = rng.standard_normal(m)
        v[zero:zero + nonneg] -= 1.0
        y = cones_mod.pi(v, spec, dual=True)
        s = y - v
        x = rng.standard_normal(n)
        As.append(A)
        bs.append(A @ x + s)
        cs.append(-(A.T @ y) - P @ x)
        Ps.append(P)
        for values, value in zip(known, (x, y, s)):
            values.append(value)
    problems = (As, bs, cs, [cone_dict] * count, Ps)
    return problems + known if solutions else problems


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


# -- the tools ------------------------------------------------------------------------------------
def _ours(As, bs, cs, cones, Ps, threads, solve_method="auto", raise_on_error=True):
    import diffqcp_np

    B = len(As)
    n, m = As[0].shape[1], As[0].shape[0]
    rng = np.random.default_rng(1)
    dxs = [rng.standard_normal(n) for _ in range(B)]
    zeros = [np.zeros(m)] * B
    kw = dict(Ps=Ps, n_jobs_forward=threads, solve_method=solve_method,
              raise_on_error=raise_on_error)
    prepared = diffqcp_np.solve_and_derivative_batch(As, bs, cs, cones, n_jobs_backward=threads,
                                                     **kw)
    return {
        "diffqcp_np forward": lambda: diffqcp_np.solve_only_batch(As, bs, cs, cones, **kw),
        "diffqcp_np forward + derivative setup": lambda: diffqcp_np.solve_and_derivative_batch(
            As, bs, cs, cones, n_jobs_backward=threads, **kw),
        "diffqcp_np DT_batch": lambda: prepared[4](dxs, zeros, zeros, return_dP=True),
        "diffqcp_np Clarabel path forward": lambda: diffqcp_np.solve_only_batch(
            As, bs, cs, cones, **dict(kw, solve_method="Clarabel")),
    }, prepared


def _moreau(As, bs, cs, cone_dict, Ps):
    import moreau

    B = len(As)
    m, n = As[0].shape
    A0, P0 = sp.csr_matrix(As[0]), sp.csr_matrix(Ps[0])
    cones = moreau.Cones(num_zero_cones=cone_dict.get("z", 0),
                         num_nonneg_cones=cone_dict.get("l", 0),
                         so_cone_dims=list(cone_dict.get("q", [])))
    settings = moreau.Settings(device="cpu", batch_size=B, enable_grad=True)
    start = time.perf_counter()
    solver = moreau.CompiledSolver(n=n, m=m, P_row_offsets=P0.indptr, P_col_indices=P0.indices,
                                   A_row_offsets=A0.indptr, A_col_indices=A0.indices,
                                   cones=cones, settings=settings)
    construction = time.perf_counter() - start
    Pv = np.stack([sp.csr_matrix(P).data for P in Ps])
    Av = np.stack([sp.csr_matrix(A).data for A in As])
    qs, bs_ = np.stack(cs), np.stack(bs)
    rng = np.random.default_rng(1)
    dx = np.stack([rng.standard_normal(n) for _ in range(B)])

    def forward():
        solver.setup(Pv, Av)
        return solver.solve(qs, bs_)

    solution = forward()
    return {"Moreau CompiledSolver forward": forward,
            "Moreau CompiledSolver backward": lambda: solver.backward(dx)}, solution, construction


def _diffcp(As, bs, cs_lp, cones, threads):
    import diffcp

    B = len(As)
    n, m = As[0].shape[1], As[0].shape[0]
    rng = np.random.default_rng(1)
    dxs = [rng.standard_normal(n) for _ in range(B)]
    zeros = [np.zeros(m)] * B

    def full():
        out = diffcp.solve_and_derivative_batch([A.copy() for A in As], bs, cs_lp, cones,
                                                n_jobs_forward=threads, n_jobs_backward=threads)
        out[4](dxs, zeros, zeros)

    return {"diffcp 1.1.9 forward + DT (LP, lsqr)": full}


def _diffqcp(As, bs, cs, cone_dict, Ps, xs, ys, ss):
    import jax
    import jax.numpy as jnp
    from diffqcp import HostQCP, QCPStructureCPU
    from jax.experimental.sparse import BCOO

    jax.config.update("jax_enable_x64", True)
    B = len(As)
    n = As[0].shape[1]
    uppers = [sp.triu(P, format="coo") for P in Ps]
    coos = [A.tocoo() for A in As]

    def bcoo(coo):
        return BCOO((jnp.asarray(coo.data), jnp.asarray(np.c_[coo.row, coo.col])),
                    shape=coo.shape)

    structure = QCPStructureCPU(bcoo(uppers[0]), bcoo(coos[0]), dict(cone_dict))
    rng = np.random.default_rng(1)
    dxs = [jnp.asarray(rng.standard_normal(n)) for _ in range(B)]
    zero = jnp.zeros(As[0].shape[0])
    qcps = [HostQCP(bcoo(uppers[k]), bcoo(coos[k]), jnp.asarray(cs[k]), jnp.asarray(bs[k]),
                    jnp.asarray(xs[k]), jnp.asarray(ys[k]), jnp.asarray(ss[k]), structure)
            for k in range(B)]

    def backward():
        for k in range(B):
            jax.block_until_ready(qcps[k].vjp(dxs[k], zero, zero))

    return {"diffqcp 0.4.4 VJP (per problem)": backward}


# -- one process: one thread count -----------------------------------------------------------
def worker(threads: int, sizes: list[int], repeats: int, socp_size: int) -> dict:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    warnings.simplefilter("ignore")
    out = {"threads": threads, "qp": {}, "socp": {}}
    for B in sizes:
        As, bs, cs, cs_lp, cones, Ps = small_qps(B)
        fns, prepared = _ours(As, bs, cs, cones, Ps, threads)
        extra = {}
        try:
            more, solution, construction = _moreau(As, bs, cs, cones[0], Ps)
            fns.update(more)
            x_ours = np.stack(prepared[0])
            extra["moreau_construction_s"] = construction
            extra["max_abs_x_difference_vs_moreau"] = float(np.abs(x_ours - solution.x).max())
        except ImportError as err:
            extra["moreau"] = f"not run: {err}"
        if B <= 1000:
            try:
                fns.update(_diffcp(As, bs, cs_lp, cones, threads))
            except ImportError as err:
                extra["diffcp"] = f"not run: {err}"
        if B <= 100 and threads == 1:
            try:
                fns.update(_diffqcp(As, bs, cs, cones[0], Ps, *prepared[:3]))
            except (ImportError, SyntaxError) as err:  # 0.4.4 needs Python >= 3.12
                extra["diffqcp"] = f"not run: {type(err).__name__}: {err}"
        if B > 1000:  # the slow Clarabel path once, not in every repeat
            fns.pop("diffqcp_np Clarabel path forward")
        for fn in fns.values():  # warm-up (JIT, thread pools)
            fn()
        reps = repeats if B <= 1000 else max(3, repeats // 2)
        medians = interleaved_medians(fns, reps)
        out["qp"][B] = {"seconds": medians, **extra}
        print(f"threads {threads} B {B}: " + ", ".join(
            f"{k} {v / B * 1e6:.1f} us" for k, v in medians.items()), file=sys.stderr)
    As, bs, cs, cones, Ps = small_socps(socp_size)
    # "IPM" by name has no fallback: its failed members are counted (NaN results)
    fns, prepared = _ours(As, bs, cs, cones, Ps, threads, solve_method="IPM",
                          raise_on_error=False)
    extra = {"IPM failed members": int(sum(np.isnan(x).any() for x in prepared[0]))}
    try:
        more, solution, construction = _moreau(As, bs, cs, cones[0], Ps)
        fns.update(more)
        extra["max_abs_x_difference_vs_moreau"] = float(
            np.nanmax(np.abs(np.stack(prepared[0]) - solution.x)))
    except ImportError as err:
        extra["moreau"] = f"not run: {err}"
    for fn in fns.values():
        fn()
    out["socp"][socp_size] = {"seconds": interleaved_medians(fns, repeats), **extra}
    return out


# -- the report ------------------------------------------------------------------------------
def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def report(runs: list[dict], load_before: str, load_after: str, repeats: int) -> list[str]:
    versions = ", ".join(f"{name} {_version(name)}" for name in
                         ("diffqcp_np", "moreau", "diffcp", "diffqcp", "clarabel", "numba"))
    lines = [
        "# Batches of small problems: diffqcp_np beside Moreau, diffcp and diffqcp",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, shared with other work "
        f"(load average before {load_before}, after {load_after}); Python "
        f"{platform.python_version()}; {versions}. Microseconds per problem, medians over "
        f"{repeats} repeats (3 or more at B = 10 000), the tools taking turns; warm-up and "
        "Moreau's structure compilation excluded.",
        "",
        "## QPs (bench_batch.small_qps: n = 20, m = 40)",
        "",
        "| threads | B | ours forward | ours forward + setup | ours DT_batch "
        "| ours forward + setup + DT | Moreau forward | Moreau backward | Moreau end to end "
        "| end-to-end ratio (Moreau / ours) | ours Clarabel path forward "
        "| diffcp (LP) forward + DT | diffqcp VJP |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def us(seconds: dict, key: str, B: int) -> str:
        return f"{seconds[key] / B * 1e6:.1f}" if key in seconds else "–"

    for run in runs:
        for B, entry in sorted(run["qp"].items(), key=lambda kv: int(kv[0])):
            B = int(B)
            t = entry["seconds"]
            ours = t["diffqcp_np forward + derivative setup"] + t["diffqcp_np DT_batch"]
            theirs = (t.get("Moreau CompiledSolver forward", np.nan)
                      + t.get("Moreau CompiledSolver backward", np.nan))
            lines.append(
                f"| {run['threads']} | {B} | {us(t, 'diffqcp_np forward', B)} "
                f"| {us(t, 'diffqcp_np forward + derivative setup', B)} "
                f"| {us(t, 'diffqcp_np DT_batch', B)} | {ours / B * 1e6:.1f} "
                f"| {us(t, 'Moreau CompiledSolver forward', B)} "
                f"| {us(t, 'Moreau CompiledSolver backward', B)} | {theirs / B * 1e6:.1f} "
                f"| {theirs / ours:.2f}× | {us(t, 'diffqcp_np Clarabel path forward', B)} "
                f"| {us(t, 'diffcp 1.1.9 forward + DT (LP, lsqr)', B)} "
                f"| {us(t, 'diffqcp 0.4.4 VJP (per problem)', B)} |")
    lines += ["", "Largest |x_ours − x_Moreau| per run: " + ", ".join(
        f"{run['threads']} thread(s), B = {B}: {entry['max_abs_x_difference_vs_moreau']:.1e}"
        for run in runs for B, entry in run["qp"].items()
        if "max_abs_x_difference_vs_moreau" in entry) + "."]
    skipped = sorted({f"{tool}: {entry[tool]}" for run in runs for entry in run["qp"].values()
                      for tool in ("moreau", "diffcp", "diffqcp") if tool in entry})
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped) + "."]
    lines += ["", "## SOCPs (n = 20, m = 25: 2 zero, 8 orthant rows, three SOCs of size 5, "
              "P positive definite)", "",
              "| threads | B | ours forward (solve_method=\"IPM\") "
              "| ours Clarabel path forward | speed-up | ours forward + setup + DT "
              "| Moreau forward | Moreau backward | IPM failed members |",
              "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        for B, entry in run["socp"].items():
            B = int(B)
            t = entry["seconds"]
            ours = t["diffqcp_np forward + derivative setup"] + t["diffqcp_np DT_batch"]
            lines.append(
                f"| {run['threads']} | {B} | {us(t, 'diffqcp_np forward', B)} "
                f"| {us(t, 'diffqcp_np Clarabel path forward', B)} "
                f"| {t['diffqcp_np Clarabel path forward'] / t['diffqcp_np forward']:.1f}× "
                f"| {ours / B * 1e6:.1f} | {us(t, 'Moreau CompiledSolver forward', B)} "
                f"| {us(t, 'Moreau CompiledSolver backward', B)} "
                f"| {entry.get('IPM failed members', '–')} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--socp-size", type=int, default=1000)
    parser.add_argument("--out", default=str(RESULTS / "peers.md"))
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.sizes, args.repeats, args.socp_size)))
        return
    load_before = _load()
    runs = []
    for threads in args.threads:
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS="1",
                   OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", JAX_PLATFORMS="cpu")
        cmd = [sys.executable, str(Path(__file__)), "--worker", str(threads), "--repeats",
               str(args.repeats), "--socp-size", str(args.socp_size), "--sizes",
               *map(str, args.sizes)]
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, check=True, text=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    load_after = _load()
    lines = report(runs, load_before, load_after, args.repeats)
    write_result(lines, args.out)
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"load_before": load_before, "load_after": load_after, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
