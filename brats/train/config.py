"""What a training run is told: :class:`TrainConfig`, with the choices it accepts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final

from brats.io.cases import MODALITIES
from brats.io.model_card import ModelInfo
from brats.network.precision import POLICIES, PRECISIONS
from brats.network.unet import NORMALIZATIONS, UNetConfig, nnunet_config
from brats.options import option
from brats.resources import (
    ACTOR_WAIT_HELP,
    ACTOR_WAIT_S,
    Replicas,
    cpus_per_replica,
    replica_bundle,
    wait_for_room,
)
from brats.storage import S3_ENDPOINT_HELP, Location, resolve
from brats.volume.augment import Augmentation
from brats.volume.geometry import Shape3
from brats.volume.labels import DEFAULT, LabelScheme
from brats.volume.resample import as_spacing

LOSS_NAMES: Final = ("cce", "dice", "dice_ce", "dice_focal", "dice_bce")
"""The losses of :mod:`brats.train.losses`, by name; ``dice_bce`` is for region outputs, the
others for a softmax."""
PRESETS: Final = ("nnunet", "seed")
"""Training recipes. ``nnunet``: instance normalization, LeakyReLU, no dropout, region
sigmoids (WT, TC, ET) trained with Dice + BCE under deep supervision, a third of the patches
centred on a class drawn uniformly among those present, nnU-Net's augmentation plus the two
site transforms (``sites``). ``seed``: the tutorial's network (ReLU, dropout, a softmax over
4 classes), ``dice_ce``, a third of the patches centred on a uniformly drawn tumor voxel,
flips only."""
AUGMENTATIONS: Final = ("nnunet", "sites", "flips", "none")
"""``nnunet``: rotation, scaling, noise, blur, brightness, contrast, low resolution, gamma and
mirroring (:class:`brats.volume.augment.Augmentation`); ``sites``: those plus a random
intensity curve and a bias field (:meth:`~brats.volume.augment.Augmentation.sites`);
``flips``: mirroring only."""
PATCH_STAGES: Final = ("auto", "worker", "ray-data")
_PRESET_DEFAULTS: Final[dict[str, dict[str, Any]]] = {
    "nnunet": {"loss": "dice_bce", "normalization": "instance", "augmentation": "sites"},
    "seed": {"loss": "dice_ce", "normalization": None, "augmentation": "flips"},
}
LR_SCHEDULES: Final = ("poly", "cosine", "constant")
"""``poly`` (nnU-Net's ``(1 - t)**0.9``), ``cosine`` or ``constant``, after the warm-up."""

RUNTIME_ONLY: Final = ("s3_endpoint", "wait_for_actors")
"""Settings of where and how patiently a run is carried out, not of what it trains: never
in ``model.json``, and a rerun that changes them is the same run."""

EpochHook = Callable[[int, int], None]
"""Called on every worker at the start of every epoch with ``(epoch, world_rank)``."""


class TrainingError(RuntimeError):
    """Training could not finish (too many failures, bad data, a broken checkpoint)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``jobs/train.py`` takes. Stored in ``model.json`` (credentials never are).

    The run lives at ``storage/name``; rerunning with the same two resumes it.
    """

    data: str = option(help="a raw NIfTI cohort, or an ingested one (a folder with manifest.json)")
    storage: str = option(help="runs folder: local or s3://; the run is storage/name")
    name: str = option("brats-unet", help="run name (resume by reusing it)")
    s3_endpoint: str | None = option(None, help=S3_ENDPOINT_HELP)
    num_workers: Replicas = option(
        Replicas(2, 2),
        help="Ray Train workers (one GPU each with --use-gpu): N, or MIN:MAX to go on with "
        "fewer when a node is lost and grow back to MAX as nodes join (elastic training)",
    )
    resize_interval_s: float = option(
        60.0,
        help="with --num-workers MIN:MAX, how often a running worker group checks whether "
        "more workers fit; growing restarts it from the newest checkpoint",
    )
    use_gpu: bool = option(False, help="one GPU per worker")
    cpus_per_worker: float | None = option(
        None,
        help="CPUs reserved per worker, and its TensorFlow compute threads, rounded up "
        "(default: 1 with GPUs; else at most 1, leaving one for data loading)",
    )
    wait_for_actors: float = option(ACTOR_WAIT_S, metavar="SECONDS", help=ACTOR_WAIT_HELP)
    worker_niceness: int = option(
        0,
        help="niceness the workers compute at, 0-19 (Ray starts its worker processes at 15, "
        "where every other process on the node preempts their compute threads mid-step)",
    )
    folds: int = option(
        1,
        help="cross-validation: K folds by case, trained concurrently as far as the cluster "
        "fits them (each a run under NAME/fold_<i>/), then their ensemble (NAME/model/); 1: "
        "one split by --val-fraction",
    )
    fold: int | None = option(None, help="with --folds K, train fold i (0..K-1) alone")
    epochs: int = option(20, help="epochs to train")
    batch_size: int = option(2, help="patches per step on each worker")
    patch_size: Shape3 = option(
        (128, 128, 128), metavar=("D", "H", "W"), help="training patch, in voxels"
    )
    patches_per_case: int = option(4, help="patches cut from each training case per epoch")
    steps_per_epoch: int | None = option(
        None,
        help="steps per epoch on every worker (default: training patches / (batch size x workers))",
    )
    preset: str = option(
        "nnunet",
        choices=PRESETS,
        help="training recipe: nnunet (instance norm, LeakyReLU, region sigmoids, Dice+BCE, "
        "deep supervision, class-balanced patches, nnU-Net augmentation plus site transforms) "
        "or seed (the "
        "tutorial's U-Net, softmax, dice_ce, tumor-centred patches, flips)",
    )
    tumor_fraction: float = option(1.0 / 3.0, help="share of patches centred on tumor")
    loss: str | None = option(
        None,
        choices=LOSS_NAMES,
        help="training loss (default: the preset's, dice_bce for nnunet, dice_ce for seed)",
    )
    augmentation: str | None = option(
        None,
        choices=AUGMENTATIONS,
        help="patch augmentation (default: the preset's, sites for nnunet, flips for seed)",
    )
    learning_rate: float = option(1e-3, help="peak learning rate (Adam)")
    lr_schedule: str = option(
        "poly", choices=LR_SCHEDULES, help="learning-rate decay after the warm-up"
    )
    warmup_fraction: float = 0.05
    """Share of all steps over which the learning rate ramps up linearly from ~0."""
    patch_stage: str = option(
        "auto",
        choices=PATCH_STAGES,
        help="where patches are cut and augmented: in each training worker (worker), in Ray "
        "Data CPU tasks anywhere in the cluster streaming batches to it (ray-data), or auto: "
        "ray-data with GPUs, worker without",
    )
    precision: str = option(
        "float32",
        choices=PRECISIONS,
        help="compute precision of the training step: bfloat16 or float16 (with loss "
        "scaling) keep float32 variables and a float32 loss; auto resolves on each worker "
        "(float16 on CUDA GPUs of compute capability 7.0 or more, bfloat16 on CPUs with "
        "AVX512_BF16 or AMX, else float32)",
    )
    val_fraction: float = option(0.2, help="share of labelled cases held out for validation")
    val_overlap: float = 0.5
    cache_mib: int = option(
        2048,
        help="keep a worker's cases (and the validation cases) in memory after epoch 1 when "
        "they fit (0: never)",
    )
    seed: int = option(0, help="seeds the split, the initial weights and the patches")
    max_failures: int = option(1, help="worker-group restarts allowed before the run fails")
    num_to_keep: int = option(2, help="checkpoints kept in storage")
    base_filters: int = option(16, help="filters of the U-Net's top level")
    depth: int = option(4, help="the U-Net's poolings")
    normalization: str | None = option(
        None,
        choices=[n for n in NORMALIZATIONS if n is not None],
        help="normalization layer after each convolution (default: the preset's, instance "
        "for nnunet, none for seed)",
    )
    modalities: tuple[str, ...] = option(
        MODALITIES, help="channels in order (FLAIR, T1ce, T2 alone: flair,t1ce,t2)"
    )
    label_scheme: str | None = option(
        None,
        metavar="SCHEME",
        help="label scheme of a raw --data cohort (built-in name or JSON file; default: from "
        "its names and labels); an ingested cohort's manifest names its own",
    )
    target_spacing: tuple[float, float, float] | None = option(
        None,
        metavar=("X", "Y", "Z"),
        help="voxel size in mm to resample a raw --data cohort to (default: nnU-Net's rule "
        "over its cases); an ingested cohort was resampled when it was ingested",
    )
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes kept in model.json (e.g. what the run was for)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; one of {PRESETS}")
        # Unset recipe fields take the preset's value, so a stored config is complete.
        for name, value in _PRESET_DEFAULTS[self.preset].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        object.__setattr__(self, "patch_size", tuple(int(s) for s in self.patch_size))
        object.__setattr__(self, "modalities", tuple(self.modalities))
        if self.target_spacing is not None:
            object.__setattr__(self, "target_spacing", as_spacing(self.target_spacing))
        try:
            object.__setattr__(self, "num_workers", Replicas.parse(self.num_workers))
        except ValueError as exc:
            raise ValueError(f"num_workers: {exc}") from None
        if min(self.batch_size, self.epochs, self.patches_per_case) < 1:
            raise ValueError("batch_size, epochs and patches_per_case must be >= 1")
        if not 0 <= self.worker_niceness <= 19:
            raise ValueError("worker_niceness must be in 0..19")
        if self.resize_interval_s < 0:
            raise ValueError("resize_interval_s must be >= 0")
        if not 0.0 <= self.tumor_fraction <= 1.0:
            raise ValueError("tumor_fraction must be in [0, 1]")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError("warmup_fraction must be in [0, 1)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; one of {LR_SCHEDULES}")
        if self.loss not in LOSS_NAMES:
            raise ValueError(f"unknown loss {self.loss!r}; one of {LOSS_NAMES}")
        if (self.loss == "dice_bce") != (self.preset == "nnunet"):
            raise ValueError(
                f"loss {self.loss!r} does not fit the {self.preset} preset's outputs: dice_bce "
                "scores region sigmoids (nnunet), the others a softmax (seed)"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; one of {PRECISIONS}")
        if self.patch_stage not in PATCH_STAGES:
            raise ValueError(f"unknown patch_stage {self.patch_stage!r}; one of {PATCH_STAGES}")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augmentation!r}; one of {AUGMENTATIONS}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")
        if self.folds < 1 or (self.folds == 1 and self.fold is not None):
            raise ValueError(f"folds must be >= 1, and > 1 to pick a fold, got {self.folds}")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise ValueError(f"fold {self.fold} is not one of the {self.folds} folds")
        divisor = 2**self.depth
        if len(self.patch_size) != 3 or any(s % divisor for s in self.patch_size):
            raise ValueError(
                f"patch_size {self.patch_size} must have 3 sides divisible by 2**depth = {divisor}"
            )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["patch_size"] = list(self.patch_size)
        out["modalities"] = list(self.modalities)
        out["num_workers"] = str(self.num_workers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; keys it does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def unet(self, precision: str = "float32", scheme: LabelScheme = DEFAULT) -> UNetConfig:
        """The architecture this run trains for the cohort's label ``scheme`` (its classes,
        its region outputs), computing in ``precision`` (a resolved one, not ``auto``).
        Exported models store the float32 form: inference picks its own."""
        values: dict[str, Any] = {
            "base_filters": self.base_filters,
            "depth": self.depth,
            "in_channels": len(self.modalities),
            "n_classes": scheme.n_classes,
            "n_regions": len(scheme.decode),
            "normalization": self.normalization,
            "mixed_precision": POLICIES[precision],
        }
        if self.preset == "nnunet":
            return nnunet_config(**values)
        return UNetConfig(**values)

    @property
    def streams_patches(self) -> bool:
        """Whether patches come from Ray Data tasks (:mod:`brats.train.stream`) rather than
        the worker's own process: ``ray-data``, or ``auto`` on GPUs, where the worker's few
        CPUs must keep its GPU fed."""
        return self.patch_stage == "ray-data" or (self.patch_stage == "auto" and self.use_gpu)

    @property
    def balance_classes(self) -> bool:
        """Whether tumor-centred patches pick a class first (``nnunet``) or a voxel."""
        return self.preset == "nnunet"

    def augment(self) -> Augmentation:
        """The patch augmentation this run applies."""
        if self.augmentation == "nnunet":
            return Augmentation()
        if self.augmentation == "sites":
            return Augmentation.sites()
        return Augmentation.flips_only() if self.augmentation == "flips" else Augmentation.none()

    def training_notes(self, checkpoint: str | None = None) -> dict[str, Any]:
        """What a model card's ``training`` says of the run: this config less
        :data:`RUNTIME_ONLY`, and the checkpoint the model came from."""
        notes: dict[str, Any] = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_ONLY}
        if checkpoint is not None:
            notes["checkpoint"] = checkpoint
        return notes

    def model_info(
        self,
        normalization: str,
        *,
        label_scheme: LabelScheme | None = None,
        manifest_hash: str | None = None,
        metrics: Mapping[str, float] | None = None,
        checkpoint: str | None = None,
        postprocessing: Mapping[str, str | int] | None = None,
        target_spacing: Sequence[float] | None = None,
    ) -> ModelInfo:
        """The model card's description of a network this run trained on a cohort prepared
        with ``normalization``; ``training`` holds this config (less :data:`RUNTIME_ONLY`) and the
        checkpoint it came from. An ``nnunet`` model predicts with flip TTA by default, as
        nnU-Net does; a ``seed`` one without, as the tutorial did."""
        return ModelInfo(
            unet=self.unet(scheme=label_scheme or DEFAULT),
            modalities=self.modalities,
            normalization=normalization,
            patch_size=self.patch_size,
            label_scheme=label_scheme,
            manifest_hash=manifest_hash,
            metrics=dict(metrics or {}),
            training=self.training_notes(checkpoint),
            postprocessing=dict(postprocessing or {}),
            tta=self.preset == "nnunet",
            target_spacing=None if target_spacing is None else as_spacing(target_spacing),
        )

    @property
    def run(self) -> Location:
        """The run's folder: ``storage/name``."""
        return resolve(self.storage, s3_endpoint=self.s3_endpoint).child(self.name)


@dataclass(frozen=True)
class TrainResult:
    """What a finished run left: its folder, the exported model, every epoch's figures."""

    run: str
    model: str | None
    history: list[dict[str, Any]]
    best: dict[str, Any]
    seconds: float


def worker_bundle(config: TrainConfig) -> tuple[dict[str, float], str]:
    """What each worker asks of the cluster, and that in words: its CPUs
    (:func:`brats.resources.cpus_per_replica`, which warns when they leave too few for
    reading data) and GPU."""
    cpus = cpus_per_replica(
        config.cpus_per_worker,
        config.num_workers.max,
        use_gpu=config.use_gpu,
        what="workers",
        reads_data=config.streams_patches,  # else each worker reads its own shards
    )
    return replica_bundle(cpus, use_gpu=config.use_gpu)


def wait_for_workers(config: TrainConfig, whose: str = "") -> dict[str, float]:
    """Each worker's resources (:func:`worker_bundle`), once the cluster has room for the
    group's smallest size: ``config.wait_for_actors`` seconds at most (0: no check). Ray
    Train alone waits for its workers without end, logging a traceback a minute.

    Raises:
        brats.resources.ActorsNotStarted: no room in time; the message starts with
            ``whose`` (``"a fold's "``) and the workers asked for.
    """
    bundle, ask = worker_bundle(config)
    n = config.num_workers.min
    what = f"{whose}{n} training worker(s) of {ask} each"
    wait_for_room(bundle, n, config.wait_for_actors, what)
    return bundle
