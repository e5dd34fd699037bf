"""The peer benchmark (``jobs/benchmark.py peer``) on a tiny volume.

Needs torch and MONAI from the ``bench`` extra (``pip install -e '.[bench]'``), which
``make test`` (and so CI) installs; a bare ``pip install -e .[dev]`` skips this module.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from brats.benchmarks import peer

TINY = peer.PeerBenchmark(shape=(32, 32, 24), window=16, base_filters=4, depth=2, threads=1)


def _args(**extra: int) -> peer.PeerBenchmark:
    return dataclasses.replace(TINY, **extra)


def test_both_sides_give_probability_maps_of_the_volume() -> None:
    args = _args()
    volume = peer._volume(args)
    assert volume.shape == (4, 32, 32, 24)
    peers = peer._build(args, volume)
    for name, fn in (("ours", peers.ours), ("monai", peers.monai), ("bf16", peers.monai_bf16)):
        probs = fn()
        assert probs.shape == (4, 32, 32, 24), name
        assert probs.dtype == np.float32, name
        assert np.all(probs >= 0), name
        atol = 2e-2 if name == "bf16" else 1e-4  # bfloat16 keeps 8 bits of mantissa
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=atol, err_msg=name)
    # 3 x 3 x 2 windows of 16 at half overlap on 32 x 32 x 24, one per call, on each side
    # (both MONAI runs call the one network).
    assert peers.windows == {"ours": 18, "monai": 36}
    # Under autocast MONAI's network computes in bfloat16: close to float32, not equal.
    difference = np.abs(peers.monai_bf16() - peers.monai()).max()
    assert 0 < difference < 0.05
    assert peers.params > 0


def test_torch_unet_matches_the_keras_parameter_count() -> None:
    from brats.network.unet import UNetConfig, build_unet

    config = UNetConfig(base_filters=4, depth=3, in_channels=3)
    net = peer._torch_unet(config)
    assert sum(p.numel() for p in net.parameters()) == build_unet(config).count_params()


def test_run_reports_the_figures() -> None:
    figures = peer.run(_args(repeats=1))
    assert {
        "shape",
        "window",
        "overlap",
        "params",
        "threads",
        "windows",
        "s_per_case",
        "ours_over_monai",
        "ours_over_monai_bf16",
        "target",
        "versions",
    } <= set(figures)
    assert set(figures["s_per_case"]) == {"ours", "monai", "monai_bf16"}
    assert figures["windows"] == {"ours": 18, "monai": 18}
    assert figures["threads"]["torch"] == 1
    assert figures["ours_over_monai"] == pytest.approx(
        figures["s_per_case"]["ours"] / figures["s_per_case"]["monai"], rel=0.02
    )
    assert figures["ours_over_monai_bf16"] == pytest.approx(
        figures["s_per_case"]["ours"] / figures["s_per_case"]["monai_bf16"], rel=0.02
    )
    # The network's share is timed inside the same run: part of the case, never more.
    assert 0 < figures["ours_network_s"] <= figures["s_per_case"]["ours"]
    assert figures["ours_network_over_monai"] == pytest.approx(
        figures["ours_network_s"] / figures["s_per_case"]["monai"], rel=0.02
    )


def test_ours_runs_in_onnx_runtime_when_asked() -> None:
    figures = peer.run(_args(repeats=1, backend="onnxruntime"))
    assert figures["backend"] == "onnxruntime" and figures["s_per_case"]["ours"] > 0
