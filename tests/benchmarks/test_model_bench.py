"""The model benchmark on a tiny network: every variant is measured and compared with the
baseline it names."""

from __future__ import annotations

import pytest

from brats.benchmarks.model import ModelBenchmark, run


@pytest.mark.integration
def test_model_benchmark_reports_each_variant_against_the_baseline() -> None:
    args = ModelBenchmark(
        size=16,
        base_filters=4,
        depth=2,
        repeats=2,
        matmul_n=64,
        against=("mixed_bfloat16",),
        backends=("keras", "onnxruntime"),
    )
    figures = run(args)
    assert figures["baseline"] == "float32"
    assert set(figures["variants"]) == {"float32", "mixed_bfloat16", "onnxruntime"}
    onnx = figures["variants"]["onnxruntime"]  # the same network in ONNX Runtime: no training
    assert onnx["forward_s"] > 0 and onnx["train_step_s"] is None
    assert onnx["forward_speedup"] == pytest.approx(
        figures["variants"]["float32"]["forward_s"] / onnx["forward_s"], rel=0.05
    )
    with pytest.raises(ValueError, match="keras first"):
        ModelBenchmark(backends=("onnxruntime",))
    assert figures["variants"]["float32"]["forward_speedup"] == 1.0
    assert figures["input_shape"] == [1, 16, 16, 16, 4]
    assert figures["params"] > 0 and figures["unet"]["deep_supervision"] == 0
    bf16 = figures["variants"]["mixed_bfloat16"]
    base_s = figures["variants"]["float32"]["forward_s"]
    # The times are rounded to 0.1 ms, a few per cent of a 16^3 forward pass.
    assert bf16["forward_speedup"] == pytest.approx(base_s / bf16["forward_s"], rel=0.05)
    assert figures["forward_vs_matmul"] > 0 and figures["train_vs_matmul"] > 0
