"""Peer benchmark: our whole-volume inference vs MONAI's sliding_window_inference in PyTorch.

One invocation, on one ``(C, D, H, W)`` float32 volume (seeded random normal: the cost of a
forward pass does not depend on the values) and the same settings for both sides:

* ``ours``: :func:`brats.network.unet.build_unet` (seeded untrained weights) through the
  :class:`~brats.segment.predictor.Predictor`'s probabilities, as the segmentation job runs it
  (a ``tf.function`` forward, Gaussian blending, one window per call);
* ``monai``: a PyTorch 3D U-Net written here with the same architecture (filters per level,
  depth, two 3x3x3 convolutions + ReLU per level, 2x2x2 max pooling, 2x2x2 stride-2
  transposed convolutions, skip concatenation, 1x1x1 head + softmax; equal parameter counts
  are checked), in eval mode under ``torch.inference_mode()``, through
  ``monai.inferers.sliding_window_inference(..., sw_batch_size=1, mode="gaussian")``;
* ``monai_bf16``: the same, under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (what a
  MONAI user does for bfloat16 on a CPU), so that ours in bfloat16 has a like-for-like peer.

Ours runs at ``--precision`` in ``--backend`` (:mod:`brats.segment.backends`).

Same window, overlap and threads: TensorFlow's intra- and inter-op pools and
``torch.set_num_threads`` get ``--threads`` (TensorFlow's can only be set before it runs
anything; when an earlier suite of ``all`` already ran it, the figures say so). Each side is
warmed up once, then ``--repeats`` runs alternate (ours, MONAI, MONAI bfloat16, ours, ...);
the figures are median seconds per case and the ratios ``ours / monai`` (MONAI float32;
target :data:`TARGET`) and ``ours / monai_bf16`` (target :data:`TARGET_BF16`).
``ours_network_s`` is the part of ours spent in the network's forward passes (timed inside
the same runs); its ratios to MONAI's whole case are the floor of ours at these windows,
whatever the tiling and blending around the network cost. torch and MONAI come from the
``bench`` extra (``pip install -e '.[bench]'``, the CPU wheel of torch); they are imported
only inside functions, so the other suites run without.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from brats.network.precision import PRECISIONS
from brats.options import option
from brats.segment.backends import RUNTIMES

TARGET = 0.25
"""``ours / monai`` (MONAI in float32) seconds per case must not exceed this."""
TARGET_BF16 = 0.5
"""``ours / monai_bf16`` (MONAI under bfloat16 autocast) seconds per case must not exceed this."""
SIDES = ("ours", "monai", "monai_bf16")


@dataclass(frozen=True)
class PeerBenchmark:
    """``jobs/benchmark.py peer``."""

    shape: tuple[int, int, int] = option(
        (240, 240, 155), metavar=("D", "H", "W"), help="the volume's grid"
    )
    window: int = option(128, help="cube side of the window")
    overlap: float = option(0.5, help="window overlap, as the segmentation job's")
    base_filters: int = option(16, help="filters of the U-Net's top level")
    depth: int = option(4, help="the U-Net's poolings")
    channels: int = option(4, help="input channels")
    repeats: int = option(3, help="timed runs of each, alternating")
    threads: int = option(os.cpu_count() or 1, help="threads for TensorFlow and for torch")
    precision: str = option(
        "float32",
        choices=PRECISIONS,
        help="our network's precision (MONAI runs float32 and under bfloat16 autocast)",
    )
    backend: str = option("keras", choices=RUNTIMES, help="the runtime of our network")


@dataclass
class _Peers:
    """One full-volume inference per call of ``ours`` / ``monai`` / ``monai_bf16``, each
    returning ``(K, D, H, W) float32`` probabilities; ``windows`` counts forward calls of
    ``ours`` and ``monai`` (both MONAI sides share one network)."""

    backend: str
    ours: Callable[[], npt.NDArray[np.float32]]
    monai: Callable[[], npt.NDArray[np.float32]]
    monai_bf16: Callable[[], npt.NDArray[np.float32]]
    params: int
    threads: dict[str, Any]
    windows: dict[str, int]
    network_s: list[float]


def _set_threads(threads: int) -> dict[str, Any]:
    """Give TensorFlow and torch ``threads`` each; report what each actually uses."""
    import tensorflow as tf
    import torch

    tf_set = True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran something (an earlier suite of ``all``)
        tf_set = False
    torch.set_num_threads(threads)
    # Raises once torch's inter-op pool has started; that pool does not run convolutions.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)
    return {
        "requested": threads,
        # 0 means TensorFlow's default: one thread per core.
        "tensorflow_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "tensorflow_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "tensorflow_set": tf_set,
        "torch": torch.get_num_threads(),
        "torch_interop": torch.get_num_interop_threads(),
    }


def _torch_unet(config: Any) -> Any:
    """The PyTorch twin of :func:`brats.network.unet.build_unet` for ``config`` (no normalization;
    dropout is off at inference), he-uniform weights and zero biases as Keras initializes."""
    import torch
    from torch import nn

    f = config.filters

    def block(c_in: int, c_out: int) -> Any:
        return nn.Sequential(
            nn.Conv3d(c_in, c_out, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(c_out, c_out, 3, padding=1),
            nn.ReLU(inplace=True),
        )

    class TorchUNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.ModuleList(
                block(config.in_channels if level == 0 else f[level - 1], f[level])
                for level in range(config.depth)
            )
            self.pool = nn.MaxPool3d(2)
            self.bottleneck = block(f[config.depth - 1], f[config.depth])
            self.up = nn.ModuleList(
                nn.ConvTranspose3d(f[level + 1], f[level], 2, stride=2)
                for level in range(config.depth)
            )
            self.dec = nn.ModuleList(block(2 * f[level], f[level]) for level in range(config.depth))
            self.head = nn.Conv3d(f[0], config.n_classes, 1)

        def forward(self, x: Any) -> Any:
            skips = []
            for enc in self.enc:
                x = enc(x)
                skips.append(x)
                x = self.pool(x)
            x = self.bottleneck(x)
            for level in reversed(range(config.depth)):
                x = self.dec[level](torch.cat([self.up[level](x), skips[level]], dim=1))
            return torch.softmax(self.head(x), dim=1)

    net = TorchUNet()
    for module in net.modules():
        if isinstance(module, nn.Conv3d | nn.ConvTranspose3d):
            nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return net.eval()


def _build(args: PeerBenchmark, volume: npt.NDArray[np.float32]) -> _Peers:
    """Both models and their full-volume inference on ``volume`` (``(C, D, H, W)``)."""
    import keras
    import torch
    from monai.inferers import sliding_window_inference

    from brats.io.cases import MODALITIES, SEED_MODALITIES
    from brats.io.model_card import ModelInfo
    from brats.network.unet import UNetConfig, build_unet, check_spatial_shape
    from brats.segment.predictor import Predictor, PredictSettings

    threads = _set_threads(args.threads)  # before TensorFlow runs anything
    config = UNetConfig(base_filters=args.base_filters, depth=args.depth, in_channels=args.channels)
    check_spatial_shape((args.window,) * 3, config.depth)
    window = (args.window, args.window, args.window)
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    model = build_unet(config)
    net = _torch_unet(config)
    params = int(model.count_params())
    torch_params = sum(int(p.numel()) for p in net.parameters())
    if params != torch_params:
        raise RuntimeError(
            f"the PyTorch U-Net has {torch_params} parameters, ours {params}: not the same "
            "architecture, the comparison would not be fair"
        )

    windows = {"ours": 0, "monai": 0}
    modalities = MODALITIES if args.channels == len(MODALITIES) else SEED_MODALITIES
    info = ModelInfo(unet=config, modalities=modalities[: args.channels], patch_size=window)
    ours_predictor = Predictor(
        model,
        info,
        PredictSettings(
            overlap=args.overlap,
            batch_size=1,
            precision=args.precision,
            no_tta=True,
            backend=args.backend,
        ),
    )
    forward = ours_predictor.forward

    network_s = [0.0]  # seconds inside our network's forward passes, since the last reset

    def counted(batch: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        windows["ours"] += len(batch)
        began = time.perf_counter()
        out = forward(batch)
        network_s[0] += time.perf_counter() - began
        return out

    ours_predictor.forward = counted

    def monai_predictor(batch: Any) -> Any:
        windows["monai"] += int(batch.shape[0])
        return net(batch)

    tensor = torch.from_numpy(np.ascontiguousarray(volume[None]))

    def ours() -> npt.NDArray[np.float32]:
        return ours_predictor.probabilities(volume)

    def monai(bf16: bool = False) -> npt.NDArray[np.float32]:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            out = sliding_window_inference(
                tensor,
                roi_size=window,
                sw_batch_size=1,
                predictor=monai_predictor,
                overlap=args.overlap,
                mode="gaussian",
            )
        return np.asarray(out[0].float().numpy(), dtype=np.float32)

    return _Peers(
        backend=ours_predictor.backend,
        ours=ours,
        monai=monai,
        monai_bf16=lambda: monai(bf16=True),
        params=params,
        threads=threads,
        windows=windows,
        network_s=network_s,
    )


def _volume(args: PeerBenchmark) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((args.channels, *args.shape), dtype=np.float32)


def run(args: PeerBenchmark, *, asked_by_name: bool = True) -> dict[str, Any]:
    try:
        import monai
        import torch
    except ImportError as err:
        message = f"torch and monai are not installed ({err}): pip install -e '.[bench]'"
        if asked_by_name:  # not part of ``all``: an error
            raise RuntimeError(message) from err
        print(f"peer: skipped, {message}")  # part of ``all``: the other suites' figures stand
        return {"skipped": message}
    import keras
    import tensorflow as tf

    peers = _build(args, _volume(args))
    t = peers.threads
    print(
        f"threads: TensorFlow intra-op {t['tensorflow_intra_op']}, inter-op "
        f"{t['tensorflow_inter_op']}"
        + ("" if t["tensorflow_set"] else " (already running: not set, 0 = one per core)")
        + f"; torch {t['torch']}, inter-op {t['torch_interop']}",
        flush=True,
    )
    warmup: dict[str, float] = {}
    windows: dict[str, int] = {}
    runs: dict[str, Callable[[], npt.NDArray[np.float32]]] = {
        "ours": peers.ours,
        "monai": peers.monai,
        "monai_bf16": peers.monai_bf16,
    }
    for name, fn in runs.items():
        began = time.perf_counter()
        fn()
        warmup[name] = time.perf_counter() - began
        if name == "monai":
            windows = dict(peers.windows)  # one case's worth, counted during the warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    network: list[float] = []  # of each timed ``ours``: the part spent in the network
    for _ in range(args.repeats):
        for name, fn in runs.items():
            peers.network_s[0] = 0.0
            began = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - began)
            if name == "ours":
                network.append(peers.network_s[0])
        print(
            f"ours {times['ours'][-1]:.2f} s, MONAI {times['monai'][-1]:.2f} s, MONAI bfloat16 "
            f"{times['monai_bf16'][-1]:.2f} s",
            flush=True,
        )
    median = {name: statistics.median(ts) for name, ts in times.items()}
    ratio = median["ours"] / median["monai"]
    ratio_bf16 = median["ours"] / median["monai_bf16"]
    network_median = statistics.median(network)
    figures = {
        "shape": [args.channels, *args.shape],
        "window": args.window,
        "overlap": args.overlap,
        "precision": args.precision,
        "backend": peers.backend,
        "unet": {"base_filters": args.base_filters, "depth": args.depth},
        "params": peers.params,
        "threads": peers.threads,
        "windows": windows,
        "repeats": args.repeats,
        "warmup_s": {k: round(v, 3) for k, v in warmup.items()},
        "times_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "s_per_case": {k: round(v, 3) for k, v in median.items()},
        "ours_over_monai": round(ratio, 3),
        "ours_over_monai_bf16": round(ratio_bf16, 3),
        # The floor of ours at these windows: its network alone, without the tiling and
        # blending around it, against MONAI's whole case (float32 and bfloat16).
        "ours_network_s": round(network_median, 3),
        "ours_network_over_monai": round(network_median / median["monai"], 3),
        "ours_network_over_monai_bf16": round(network_median / median["monai_bf16"], 3),
        "target": {"ours_over_monai": TARGET, "ours_over_monai_bf16": TARGET_BF16},
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "torch": torch.__version__,
            "monai": monai.__version__,
        },
    }
    print(
        f"peer {tuple(args.shape)} x{args.channels}, window {args.window}^3, overlap "
        f"{args.overlap}, {args.threads} threads: ours ({args.precision}, {args.backend}) "
        f"{median['ours']:.2f} s/case ({windows['ours']} windows), MONAI float32 "
        f"{median['monai']:.2f} s/case ({windows['monai']} windows) -> {ratio:.2f} (target <= "
        f"{TARGET}); MONAI bfloat16 autocast {median['monai_bf16']:.2f} s/case -> "
        f"{ratio_bf16:.2f} (target <= {TARGET_BF16}); ours' network alone {network_median:.2f} s "
        f"-> {network_median / median['monai']:.2f} and "
        f"{network_median / median['monai_bf16']:.2f}"
    )
    return figures
