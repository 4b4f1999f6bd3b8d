"""The CPU-runnable parts of the GPU benchmark and checklist scripts (they are meant to
run on a machine with a CUDA device): argument parsing and the stand-in mode, in which
the device path runs on NumPy with the cuDSS stand-ins."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import bench_gpu  # noqa: E402
import gpu_checklist  # noqa: E402


def test_benchmark_arguments():
    args = bench_gpu.parse_args([])
    assert (args.count, args.large_n, args.repeats, args.stand_in) == (10_000, 50_000, 10,
                                                                       False)
    quick = bench_gpu.parse_args(["--quick", "--stand-in", "--out", "x"])
    assert (quick.count, quick.large_n, quick.repeats) == (200, 2_000, 3)
    with pytest.raises(SystemExit):
        bench_gpu.parse_args(["--stand-in"])  # a stand-in run must not write results/


def test_checklist_arguments(monkeypatch, tmp_path):
    monkeypatch.delenv("OUT", raising=False)
    with pytest.raises(SystemExit):
        gpu_checklist.parse_args([])
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_checklist.parse_args([]).out == tmp_path


def test_benchmark_stand_in_run(tmp_path, fresh_structures):
    results = bench_gpu.main(["--stand-in", "--out", str(tmp_path), "--count", "12",
                              "--large-n", "200", "--repeats", "1"])
    assert results["small_batch"]["relative_error"] < 1e-9
    assert results["sparse_qp"]["relative_error"] < 1e-9
    assert results["environment"]["engine"] == "numpy-stand-in"
    assert json.loads((tmp_path / "gpu.json").read_text())["small_batch"]["problems"] == 12
    assert "NOT GPU timings" in (tmp_path / "gpu.md").read_text()


def test_checklist_stand_in_run(tmp_path, fresh_structures):
    results = gpu_checklist.main(["--stand-in", "--quick", "--no-bench", "--out",
                                  str(tmp_path)])
    statuses = {name.split()[0]: r["status"] for name, r in results.items()}
    assert statuses == {"0": "passed", "1-3": "skipped", "4": "passed", "5": "passed",
                        "6": "passed", "7": "passed", "8": "passed", "9": "skipped"}, results
    written = json.loads((tmp_path / "checklist.json").read_text())
    assert set(written) == set(results)
    assert "| 6 uniform batch | passed |" in (tmp_path / "checklist.md").read_text()
