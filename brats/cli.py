"""Command line: ``brats synth``, ``brats ingest`` (and the jobs' argument parsing).

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


COMMANDS = {
    "ingest": "brats.cli:run_ingest",
    "synth": "brats.synth:main",
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
