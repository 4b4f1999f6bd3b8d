"""The suite's Markdown report and plots, from the measured rows.

A row is :func:`suite_runner.measure_spec`'s dict: problem description, ``reference``,
``ours`` and ``diffcp`` (per mode); every measurement may instead be
``{"skipped": reason}``.
"""

from __future__ import annotations

from pathlib import Path

from suite_runner import DENSE_REFERENCE_MAX_N, DIFFCP_MODES, SPARSE_REFERENCE_MAX_BLOCK

DASH = "—"


def _ok(result: dict | None) -> bool:
    return bool(result) and "skipped" not in result


def _get(row: dict, *keys: str) -> float | None:
    """``row[k1][k2]...`` or None where missing or skipped."""
    value = row
    for key in keys:
        if not isinstance(value, dict) or "skipped" in value or key not in value:
            return None
        value = value[key]
    return value


def _reason(row: dict, *keys: str) -> str:
    value = row
    for key in keys:
        value = value.get(key, {}) if isinstance(value, dict) else {}
        if isinstance(value, dict) and "skipped" in value:
            return value["skipped"]
    return DASH


def seconds(t: float | None) -> str:
    """Seconds to 3 significant digits."""
    return DASH if t is None else f"{t:.3g}"


def error(e: float | None) -> str:
    """A relative error in scientific notation."""
    return DASH if e is None else f"{e:.1e}"


def fraction(num: float | None, den: float | None) -> str:
    """``num / den`` to 2 significant digits."""
    if num is None or den is None or den <= 0:
        return DASH
    return f"{num / den:.2g}"


def ratio(num: float | None, den: float | None) -> str:
    """``num / den`` as a speed-up (``12×``)."""
    if num is None or den is None or den <= 0:
        return DASH
    return f"{num / den:.3g}×"


def _diffcp_dt(row: dict, mode: str) -> str:
    t = _get(row, "diffcp", mode, "dt")
    return seconds(t) if t is not None else _reason(row, "diffcp", mode)


def _speed_ups(row: dict, mode: str) -> str:
    """diffcp's DT over our setup + DT and over our reused DT."""
    theirs = _get(row, "diffcp", mode, "dt")
    if theirs is None:
        return DASH
    return (f"{ratio(theirs, _get(row, 'ours', 'setup_dt'))} / "
            f"{ratio(theirs, _get(row, 'ours', 'dt'))}")


def _errors(row: dict) -> str:
    parts = [_get(row, "ours", "err_dt")] + [_get(row, "diffcp", m, "err_dt")
                                             for m in DIFFCP_MODES]
    return " / ".join(error(e) for e in parts)


def headline(rows: list[dict], batch: dict | None) -> list[str]:
    """One line per problem (forward, our setup + DT, diffcp's DT, speed-ups, errors),
    then the batch in one sentence."""
    lines = [
        "| problem | N | forward, Clarabel (s) | ours: setup + DT (s) | ours: DT reused (s) "
        "| diffcp lsqr DT (s) | diffcp dense DT (s) | speed-up vs lsqr (setup + DT / reused) "
        "| speed-up vs dense (setup + DT / reused) | DT error: ours / lsqr / dense |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['name']} | {DASH} | {row['skipped']} |" + f" {DASH} |" * 7)
            continue
        lines.append(
            f"| {row['name']} | {row['N']} | {seconds(_get(row, 'ours', 'forward'))} "
            f"| {seconds(_get(row, 'ours', 'setup_dt'))} | {seconds(_get(row, 'ours', 'dt'))} "
            f"| {_diffcp_dt(row, 'lsqr')} | {_diffcp_dt(row, 'dense')} "
            f"| {_speed_ups(row, 'lsqr')} | {_speed_ups(row, 'dense')} | {_errors(row)} |")
    if _ok(batch):
        job, count = batch["jobs"][1], batch["problems"]
        lines += ["", f"Batch of {count} small QPs (n = 20, m = 40), one worker: forward + "
                  f"DT_batch {job['ours']['total'] / count * 1e3:.3g} ms per problem against "
                  f"diffcp's {job['diffcp']['total'] / count * 1e3:.3g} ms "
                  f"({ratio(job['diffcp']['total'], job['ours']['total'])})."]
    return lines


def ours_table(rows: list[dict]) -> list[str]:
    """diffqcp_np in detail: sizes, every timing, the reference and both errors."""
    lines = [
        "| problem | n | m | nnz(A) | nnz(P) | cones | forward (s) | setup (s) "
        "| setup + DT (s) | setup + DT, pattern known (s) | D (s) | DT (s) "
        "| (setup + DT) / forward: new / known pattern | DT / forward | reference "
        "| D error | DT error | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "skipped" in row:
            continue
        ours = row["ours"]
        ref = row["reference"]
        ref_text = _reference_text(ref)
        notes = "; ".join(ours.get("notes", [])) if _ok(ours) else ours["skipped"]
        if _ok(ref) and ref["notes"]:
            notes = "; ".join(filter(None, [notes, "reference: " + "; ".join(ref["notes"])]))
        forward = _get(row, "ours", "forward")
        lines.append(
            f"| {row['name']} | {row['n']} | {row['m']} | {row['nnz_A']} | {row['nnz_P']} "
            f"| {row['cones']} | {seconds(forward)} | {seconds(_get(row, 'ours', 'setup'))} "
            f"| {seconds(_get(row, 'ours', 'setup_dt'))} "
            f"| {seconds(_get(row, 'ours', 'setup_dt_known'))} "
            f"| {seconds(_get(row, 'ours', 'd'))} | {seconds(_get(row, 'ours', 'dt'))} "
            f"| {fraction(_get(row, 'ours', 'setup_dt'), forward)} / "
            f"{fraction(_get(row, 'ours', 'setup_dt_known'), forward)} "
            f"| {fraction(_get(row, 'ours', 'dt'), forward)} | {ref_text} "
            f"| {error(_get(row, 'ours', 'err_d'))} | {error(_get(row, 'ours', 'err_dt'))} "
            f"| {notes or DASH} |")
    return lines


def _reference_text(ref: dict) -> str:
    """``dense (0.3 s)``, ``sparse LU (1.2 s)`` or ``FD (2.6 s)``; the reason where
    skipped."""
    if not _ok(ref):
        return ref.get("skipped", DASH)
    return f"{ref['kind']} ({seconds(ref['seconds'])} s)"


def diffcp_table(rows: list[dict]) -> list[str]:
    """diffcp 1.1.9 per mode: forward + setup, DT, DT's error and our speed-ups."""
    lines = [
        "| problem | mode | forward solver | forward + setup (s) | DT (s) | DT error "
        "| speed-up vs ours setup + DT | speed-up vs ours DT reused | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "skipped" in row:
            continue
        reasons = {_reason(row, "diffcp", mode) for mode in DIFFCP_MODES}
        if len(reasons) == 1 and reasons != {DASH}:
            lines.append(f"| {row['name']} | {', '.join(DIFFCP_MODES)} | {DASH} "
                         f"| {reasons.pop()} |" + f" {DASH} |" * 5)
            continue
        for mode in DIFFCP_MODES:
            result = row["diffcp"][mode]
            if not _ok(result):
                lines.append(f"| {row['name']} | {mode} | {DASH} | {result['skipped']} |"
                             + f" {DASH} |" * 5)
                continue
            dt = result["dt"]
            lines.append(
                f"| {row['name']} | {mode} | {result['solver']} "
                f"| {seconds(result['forward_setup'])} | {seconds(dt)} "
                f"| {error(result.get('err_dt'))} "
                f"| {ratio(dt, _get(row, 'ours', 'setup_dt'))} "
                f"| {ratio(dt, _get(row, 'ours', 'dt'))} "
                f"| {'; '.join(result['notes']) or DASH} |")
    return lines


def batch_table(batch: dict) -> list[str]:
    """Per-problem times of the batch, diffqcp_np against diffcp, by number of workers."""
    if not _ok(batch):
        return [f"Batch: {batch['skipped'] if batch else 'not run'}."]
    count = batch["problems"]
    lines = [
        "| workers | diffqcp_np forward + DT_batch (ms/problem) | diffcp forward + DT_batch "
        "(ms/problem) | speed-up | diffqcp_np DT_batch alone (µs/problem) "
        "| diffcp DT_batch alone (µs/problem) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for n_jobs, job in batch["jobs"].items():
        ours, theirs = job["ours"], job["diffcp"]
        lines.append(
            f"| {n_jobs} | {ours['total'] / count * 1e3:.3g} "
            f"| {theirs['total'] / count * 1e3:.3g} | {ratio(theirs['total'], ours['total'])} "
            f"| {ours['dt'] / count * 1e6:.3g} | {theirs['dt'] / count * 1e6:.3g} "
            f"| {ratio(theirs['dt'], ours['dt'])} |")
    return lines


def startup_table(startup: dict) -> list[str]:
    """Import and first-call costs (see ``bench_startup``)."""
    if not _ok(startup):
        return [f"Start-up: {startup['skipped'] if startup else 'not run'}."]
    import bench_startup

    return bench_startup.table(startup)


def problems_list(rows: list[dict]) -> list[str]:
    """How each problem was built."""
    return [f"- **{row['name']}**: {row.get('note') or DASH}" for row in rows]


def method_notes(settings_text: str) -> list[str]:
    """How the numbers were taken."""
    return [
        f"- {settings_text}",
        "- Forward: `diffqcp_np.solve_only(..., solve_method=\"CLARABEL\")`, tolerances 1e-9. "
        "Setup: `diffqcp_np.derivative(...)` at that solution (the factorisation). "
        "Setup + DT: a fresh `derivative(...)` and one DT. Setup and setup + DT are timed "
        "for a pattern of the reduced system never factored before (the process's cache "
        "of symbolic analyses is cleared first, so the AMD ordering is computed); "
        "\"pattern known\": the same with the symbolic analysis cached, as when problems "
        "of one structure are differentiated in turn (training loops, batches). D and DT: "
        "one call each, reusing one setup. JIT warm-up excluded (every code path runs "
        "once in the worker first).",
        "- diffcp 1.1.9: `diffcp.solve_and_derivative(A, b, c, cone_dict, mode=...)` with "
        "Clarabel (tolerances 1e-9), except with PSD cones, where diffcp 1.1.9 mis-orders "
        "Clarabel's y and s and gets SCS (eps 1e-9); its DT is timed alone (its setup is "
        "in forward + setup). lsqr and dense modes take no P (`n/a (P)`) and diffcp has "
        "no power cones.",
        f"- Reference, N = n + m ≤ {DENSE_REFERENCE_MAX_N}: `dense`, the derivative system "
        "[[P, A'D], [−A, I − D]] with D = DΠ_K*(y − s) built in the benchmark with dense "
        "NumPy (closed-form zero/nonnegative/SOC/PSD Jacobians, 4th-order differences of "
        "the public projection for exponential and power cones, good to about 1e-10), "
        "solved by dense LU at each library's own solution. Larger N where every cone "
        f"block is at most {SPARSE_REFERENCE_MAX_BLOCK} wide: `sparse LU`, the same "
        "system assembled by SciPy as a sparse matrix and solved by SuperLU. Otherwise "
        "`FD`, central differences along one random (dA, db, dc), re-solving with "
        "Clarabel at "
        "tolerance 1e-11 (step 1e-5 of the data's norm); DT is checked through "
        "<DT(g), dθ> = <g, D dθ>. The FD reference is only as good as the re-solves "
        "(about 1e-8 where Clarabel reaches 1e-11, 1e-6 at 1e-9; a re-solve that stops "
        "short is noted as AlmostSolved).",
        "- Errors: relative 2-norm error of (dx, dy, ds) for D and of (dA, db, dc) for DT "
        "(Frobenius norm for dA), with random standard normal dA (on A's pattern), db, dc "
        "and cotangents dx, dy, ds.",
        "- Speed-up: diffcp's DT time over ours: over our setup + DT (a fresh "
        "factorisation and one DT) and over our DT reusing the setup.",
    ]


def markdown(rows: list[dict], batch: dict | None, startup: dict | None, header: list[str],
             plots: list[str], settings_text: str) -> str:
    """The whole report."""
    sections = [
        ["# Benchmark suite: diffqcp_np against diffcp 1.1.9", "", *header, ""],
        ["## Headline", "", *headline(rows, batch), ""],
        [f"![{name}]({name})" for name in plots] + [""],
        ["## Start-up", "", *startup_table(startup), ""],
        ["## diffqcp_np", "", *ours_table(rows), ""],
        ["## diffcp 1.1.9", "", *diffcp_table(rows), ""],
        ["## Batch of small QPs", "", *batch_table(batch), ""],
        ["## Problems", "", *problems_list(rows), ""],
        ["## Method", "", *method_notes(settings_text)],
    ]
    return "\n".join(line for section in sections for line in section) + "\n"


def _barh(ax, labels: list[str], series: dict[str, list[float | None]], xlabel: str) -> None:
    """Grouped horizontal bars on a log axis; missing values leave gaps."""
    height = 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
        pos = [i + (k - (len(series) - 1) / 2) * height for i in range(len(labels))]
        kept = [(p, v) for p, v in zip(pos, values) if v is not None and v > 0]
        if kept:
            ax.barh([p for p, _ in kept], [v for _, v in kept], height=height, label=name)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plots(rows: list[dict], out_dir: Path, stem: str) -> list[str]:
    """Write the PNG plots; returns their file names (none without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plots")
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in rows if "skipped" not in row]
    labels = [_plot_label(row) for row in rows]
    accuracy_labels = [label + (" [FD reference]" if _get(row, "reference", "kind") == "FD"
                                else "") for label, row in zip(labels, rows)]
    figures = {
        f"{stem}_dt.png": (labels, "time of one DT (s), log scale", {
            "diffqcp_np setup + DT": [_get(r, "ours", "setup_dt") for r in rows],
            "diffqcp_np DT reusing setup": [_get(r, "ours", "dt") for r in rows],
            "diffcp lsqr DT": [_get(r, "diffcp", "lsqr", "dt") for r in rows],
            "diffcp dense DT": [_get(r, "diffcp", "dense", "dt") for r in rows],
        }),
        f"{stem}_vs_forward.png": (labels, "fraction of the Clarabel forward time, log scale", {
            "diffqcp_np (setup + DT) / forward, new pattern":
                [_fraction(r, "setup_dt") for r in rows],
            "diffqcp_np (setup + DT) / forward, pattern known":
                [_fraction(r, "setup_dt_known") for r in rows],
            "diffqcp_np DT / forward": [_fraction(r, "dt") for r in rows],
        }),
        f"{stem}_accuracy.png": (accuracy_labels, "relative error of DT, log scale", {
            "diffqcp_np": [_get(r, "ours", "err_dt") for r in rows],
            "diffcp lsqr": [_get(r, "diffcp", "lsqr", "err_dt") for r in rows],
            "diffcp dense": [_get(r, "diffcp", "dense", "err_dt") for r in rows],
        }),
    }
    for name, (names, xlabel, series) in figures.items():
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) * len(series) / 2 + 1.5))
        _barh(ax, names, series, xlabel)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
    return list(figures)


def _plot_label(row: dict) -> str:
    """The problem's name, with the reason where diffcp does not run it."""
    reasons = {_reason(row, "diffcp", mode) for mode in DIFFCP_MODES}
    if len(reasons) == 1 and (reason := reasons.pop()).startswith("n/a"):
        return f"{row['name']} [diffcp {reason}]"
    return row["name"]


def _fraction(row: dict, key: str) -> float | None:
    value, forward = _get(row, "ours", key), _get(row, "ours", "forward")
    return None if value is None or not forward else value / forward
