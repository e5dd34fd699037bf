"""The GPU benchmark without a GPU: it says so and exits 0; with ``--cpu`` the same code runs
at tiny sizes and reports every section (its figures are measured on a GPU, never here)."""

from __future__ import annotations

import json
from pathlib import Path

from brats.benchmarks.command import run_benchmark
from brats.benchmarks.gpu import GpuBenchmark, run


def test_without_a_gpu_it_says_so_measures_nothing_and_exits_0(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gpu.json"
    assert run_benchmark(["--json", str(out), "gpu"]) == 0
    figures = json.loads(out.read_text())["gpu"]
    assert figures["gpu"] is False and figures["tensorflow"]["gpus"] == []
    assert "train_step" not in figures
    assert "sees no GPU" in capsys.readouterr().out


def test_on_the_cpu_every_section_is_measured_and_float16_is_refused_with_its_reason() -> None:
    args = GpuBenchmark(
        precisions=("float32", "float16", "bfloat16"), size=16, batch=1, steps=1,
        case_shape=(24, 20, 16), cases=1, base_filters=2, depth=2, cpu=True,
        backends=("keras", "onnxruntime"),
    )  # fmt: skip
    figures = run(args)
    assert figures["refused"].keys() == {"float16"}
    assert "needs a CUDA GPU" in figures["refused"]["float16"]
    for section in ("train_step", "case", "xla"):
        assert figures[section].keys() == {"float32", "bfloat16"}, section
    step = figures["train_step"]
    assert step["float32"]["vs_float32"] == 1.0 and step["bfloat16"]["samples_per_s"] > 0
    case = figures["case"]["bfloat16"]
    assert case["plain_ms_per_case"] > 0 and case["tta_ms_per_case"] > 0
    assert figures["xla"]["float32"]["xla_speedup"] > 0
    onnx = figures["case_onnxruntime"]  # the CPU wheel: ONNX Runtime on the CPU
    assert onnx["providers"] == ["CPUExecutionProvider"] and onnx["plain_ms_per_case"] > 0
    assert step["float32"]["peak_gib"] is None  # no GPU memory statistics on a CPU
    assert figures["skipped"] == []


def test_sections_past_the_budget_are_skipped_and_listed() -> None:
    figures = run(GpuBenchmark(precisions=("float32",), cpu=True, budget_s=0.0))
    assert figures["skipped"] == ["train_step/float32", "case/float32", "xla/float32"]
    assert figures["train_step"] == {}
