"""Command line: ``brats {synth,ingest,train,segment,nightly,app}``; the jobs' argument parsing.

Each job script in ``jobs/`` is a thin wrapper over one ``run_*`` function here: arguments
become one frozen config dataclass, the library does the work, and the result's location is
printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from brats.runtime import init_ray, setup_logging

log = logging.getLogger("brats")


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--s3-endpoint",
        default=None,
        help="S3-compatible endpoint URL (MinIO, moto); default $AWS_ENDPOINT_URL or AWS",
    )


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="CPUs for a local Ray (ignored when joining a cluster)",
    )


def ingest_parser() -> argparse.ArgumentParser:
    from brats.nifti import Limits
    from brats.preprocess import Normalization

    parser = argparse.ArgumentParser(
        prog="brats ingest",
        description="Read, validate and normalize a NIfTI cohort with Ray Data; write Parquet "
        "shards and a manifest.",
    )
    parser.add_argument("--cohort", required=True, help="cohort root: local folder or s3://")
    parser.add_argument("--out", required=True, help="output folder: local or s3://")
    parser.add_argument(
        "--modalities",
        default="flair,t1,t1ce,t2",
        help="channels in order (the seed's 3-channel mode: flair,t1ce,t2)",
    )
    parser.add_argument(
        "--normalization", choices=[n.value for n in Normalization], default="zscore"
    )
    parser.add_argument("--no-crop", action="store_true", help="keep the full grid")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument(
        "--label-convention",
        choices=["brats2020", "brats2023"],
        default=None,
        help="force the on-disk label convention (default: from the file names)",
    )
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=Limits().max_bytes,
        help="largest voxel data one file may declare",
    )
    parser.add_argument(
        "--readers",
        type=int,
        default=None,
        help="reader actors (one CPU each); default: one per CPU of the cluster at start",
    )
    add_storage_arguments(parser)
    add_ray_arguments(parser)
    return parser


def run_ingest(argv: list[str] | None = None) -> int:
    from brats.data import IngestConfig, ingest
    from brats.labels import LabelConvention
    from brats.nifti import Limits
    from brats.preprocess import Normalization, PreprocessConfig

    args = ingest_parser().parse_args(argv)
    setup_logging()
    config = IngestConfig(
        cohort=args.cohort,
        out=args.out,
        s3_endpoint=args.s3_endpoint,
        preprocess=PreprocessConfig(
            modalities=tuple(m.strip() for m in args.modalities.split(",") if m.strip()),
            normalization=Normalization(args.normalization),
            crop_to_brain=not args.no_crop,
            dtype=args.dtype,
            convention=LabelConvention(args.label_convention) if args.label_convention else None,
            limits=Limits(max_bytes=args.max_bytes),
        ),
        readers=args.readers,
    )
    init_ray(num_cpus=args.num_cpus)
    result = ingest(config)
    counts = result.manifest["counts"]
    print(
        json.dumps(
            {
                "manifest": result.manifest_uri,
                "ok": counts["ok"],
                "failed": counts["failed"],
                "rejected": counts["rejected"],
                "seconds": round(result.seconds, 1),
                "failures": result.manifest["failures"] + result.manifest["rejected"],
            },
            indent=2,
        )
    )
    return 0 if counts["ok"] else 1


def train_parser() -> argparse.ArgumentParser:
    from brats.training import TrainConfig

    d = TrainConfig(data="", storage="")
    parser = argparse.ArgumentParser(
        prog="brats train",
        description="Train the 3D U-Net with Ray Train (multi-worker TensorFlow); checkpoints "
        "to storage; rerun with the same --name and --storage to resume.",
    )
    parser.add_argument("--data", required=True, help="raw NIfTI cohort or ingested cohort")
    parser.add_argument("--storage", required=True, help="runs folder: local or s3://")
    parser.add_argument("--name", default=d.name, help="run name (resume by reusing it)")
    parser.add_argument("--num-workers", type=int, default=d.num_workers)
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    parser.add_argument(
        "--cpus-per-worker",
        type=float,
        default=None,
        help="CPUs reserved per worker (default: 1 with GPUs; else at most 1, leaving one for "
        "data loading)",
    )
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="per worker")
    parser.add_argument("--patch-size", type=int, nargs=3, default=list(d.patch_size))
    parser.add_argument("--patches-per-case", type=int, default=d.patches_per_case)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--tumor-fraction", type=float, default=d.tumor_fraction)
    parser.add_argument("--loss", choices=["cce", "dice", "dice_ce", "dice_focal"], default=d.loss)
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate)
    parser.add_argument(
        "--lr-schedule", choices=["poly", "cosine", "constant"], default=d.lr_schedule
    )
    parser.add_argument("--mixed-precision", action="store_true", help="float16 (GPU only)")
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--cache-mib",
        type=int,
        default=d.cache_mib,
        help="keep a worker's cases in memory after epoch 1 when its share fits (0: never)",
    )
    parser.add_argument("--max-failures", type=int, default=d.max_failures)
    parser.add_argument("--num-to-keep", type=int, default=d.num_to_keep)
    parser.add_argument("--base-filters", type=int, default=d.base_filters)
    parser.add_argument("--depth", type=int, default=d.depth)
    parser.add_argument("--normalization", choices=["batch", "group", "instance"], default=None)
    parser.add_argument("--modalities", default=",".join(d.modalities))
    add_storage_arguments(parser)
    add_ray_arguments(parser)
    return parser


def run_train(argv: list[str] | None = None) -> int:
    from brats.training import TrainConfig, TrainingError, train

    args = train_parser().parse_args(argv)
    setup_logging()
    config = TrainConfig(
        data=args.data,
        storage=args.storage,
        name=args.name,
        s3_endpoint=args.s3_endpoint,
        num_workers=args.num_workers,
        use_gpu=args.use_gpu,
        cpus_per_worker=args.cpus_per_worker,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patch_size=tuple(args.patch_size),
        patches_per_case=args.patches_per_case,
        steps_per_epoch=args.steps_per_epoch,
        tumor_fraction=args.tumor_fraction,
        loss=args.loss,
        learning_rate=args.learning_rate,
        lr_schedule=args.lr_schedule,
        mixed_precision=args.mixed_precision,
        val_fraction=args.val_fraction,
        seed=args.seed,
        cache_mib=args.cache_mib,
        max_failures=args.max_failures,
        num_to_keep=args.num_to_keep,
        base_filters=args.base_filters,
        depth=args.depth,
        normalization=args.normalization,
        modalities=tuple(m.strip() for m in args.modalities.split(",") if m.strip()),
    )
    init_ray(num_cpus=args.num_cpus)
    try:
        result = train(config)
    except TrainingError as err:
        log.error("%s", err)
        print(json.dumps({"status": "failed", "error": str(err)}, indent=2))
        return 1
    print(
        json.dumps(
            {
                "status": "ok",
                "run": result.run,
                "model": result.model,
                "epochs": len(result.history),
                "best": result.best,
                "seconds": round(result.seconds, 1),
            },
            indent=2,
        )
    )
    return 0


def segment_parser() -> argparse.ArgumentParser:
    from brats.segment import SegmentConfig

    d = SegmentConfig(cohort="", model="", out="")
    parser = argparse.ArgumentParser(
        prog="brats segment",
        description="Segment a cohort with a trained model on Ray Data: one mask per case in "
        "the case's geometry, records, a Dice report; cases already done are skipped.",
    )
    parser.add_argument("--cohort", required=True, help="NIfTI cohort: local folder or s3://")
    parser.add_argument("--model", required=True, help="model folder (model.keras + json)")
    parser.add_argument("--out", required=True, help="output folder: local or s3://")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per model actor")
    parser.add_argument("--num-actors", type=int, default=d.num_actors, help="model replicas")
    parser.add_argument("--cpus-per-actor", type=float, default=d.cpus_per_actor)
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="windows per call")
    parser.add_argument("--overlap", type=float, default=d.overlap)
    parser.add_argument("--tta", action="store_true", help="average the 8 axis flips")
    parser.add_argument(
        "--min-et-voxels",
        type=int,
        default=d.min_et_voxels,
        help="enhancing-tumor components smaller than this become necrosis (0: off)",
    )
    parser.add_argument(
        "--label-convention",
        choices=["brats2020", "brats2023"],
        default=None,
        help="write masks in this convention (default: each case's own)",
    )
    parser.add_argument("--fail-on-error", action="store_true", help="exit 1 when any case failed")
    add_storage_arguments(parser)
    add_ray_arguments(parser)
    return parser


def run_segment(argv: list[str] | None = None) -> int:
    from brats.segment import SegmentConfig, SegmentError, segment

    args = segment_parser().parse_args(argv)
    setup_logging()
    config = SegmentConfig(
        cohort=args.cohort,
        model=args.model,
        out=args.out,
        s3_endpoint=args.s3_endpoint,
        use_gpu=args.use_gpu,
        num_actors=args.num_actors,
        cpus_per_actor=args.cpus_per_actor,
        batch_size=args.batch_size,
        overlap=args.overlap,
        flip_tta=args.tta,
        min_et_voxels=args.min_et_voxels,
        label_convention=args.label_convention,
        fail_on_error=args.fail_on_error,
    )
    init_ray(num_cpus=args.num_cpus)
    try:
        result = segment(config)
    except SegmentError as err:
        log.error("%s", err)
        print(json.dumps({"status": "failed", "error": str(err)}, indent=2))
        return 1
    print(
        json.dumps(
            {
                "status": "ok",
                "out": result.out,
                "model_version": result.model_version,
                "cases": result.total,
                "skipped": result.skipped,
                "done": result.done,
                "failed": result.failed,
                "report": result.report,
                "seconds": round(result.seconds, 1),
            },
            indent=2,
        )
    )
    return result.exit_code(fail_on_error=config.fail_on_error)


COMMANDS = {
    "synth": "brats.synth:main",
    "ingest": "brats.cli:run_ingest",
    "train": "brats.cli:run_train",
    "segment": "brats.cli:run_segment",
    "nightly": "brats.nightly:main",
    "app": "brats.app:main",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: brats {" + ",".join(COMMANDS) + "} [options]   (brats CMD -h for help)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module, func = COMMANDS[argv[0]].split(":")
    import importlib

    entry = getattr(importlib.import_module(module), func)
    return int(entry(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
