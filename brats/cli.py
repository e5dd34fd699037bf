"""Command line: ``brats {synth,ingest,train,segment,evaluate,nightly,app,schemes,export}``
and their parsers.

Each parser is built from the command's config dataclasses (:mod:`brats.options`), and each
``run_*`` function is a job's whole entry point: arguments in, one config, one call to the
library, the result printed as JSON. ``jobs/*.py`` call them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from brats.options import build_parser, parse_config, parse_or_exit

if TYPE_CHECKING:
    from brats.report.batch import JobConfig, JobResult

log = logging.getLogger("brats")

T = TypeVar("T")
J = TypeVar("J", bound="JobConfig")


def _config_on_ray(parser: argparse.ArgumentParser, cls: type[T], argv: Sequence[str] | None) -> T:
    """The ``cls`` config of a Ray job's arguments, with logging set up and Ray started (or
    joined: ``RAY_ADDRESS``, set by ``ray job submit``). Exits 1 with a message naming the
    address when the cluster to join does not answer (:func:`brats.runtime.init_ray`)."""
    from brats.runtime import ClusterUnreachable, LocalRay, init_ray, setup_logging

    args, config = parse_or_exit(parser, argv, lambda a: parse_config(cls, a))
    setup_logging()
    try:
        init_ray(num_cpus=parse_config(LocalRay, args).num_cpus)
    except ClusterUnreachable as err:
        log.error("%s", err)
        raise SystemExit(1) from err
    return config


def _print_json(document: dict[str, Any]) -> None:
    print(json.dumps(document, indent=2))


# --- the commands -------------------------------------------------------------------------------


def ingest_parser() -> argparse.ArgumentParser:
    from brats.ingest.job import IngestConfig
    from brats.runtime import LocalRay

    return build_parser(
        "brats ingest",
        "Read, validate and normalize a NIfTI cohort with Ray Data; write Parquet shards and "
        "a manifest.",
        IngestConfig,
        LocalRay,
    )


def run_ingest(argv: Sequence[str] | None = None) -> int:
    from brats.ingest.job import IngestConfig, ingest
    from brats.resources import ActorsNotStarted
    from brats.volume.labels import SchemeError

    try:
        result = ingest(_config_on_ray(ingest_parser(), IngestConfig, argv))
    except SchemeError as err:  # the cohort's scheme is open, or --label-scheme is bad
        log.error("%s", err)
        return 2
    except ActorsNotStarted as err:  # the cluster had no room for a reader
        log.error("%s", err)
        return 1
    counts = result.manifest["counts"]
    _print_json(
        {
            "manifest": result.manifest_uri,
            "ok": counts["done"],  # printed as before: scripts read this key
            "failed": counts["failed"],
            "rejected": counts["rejected"],
            "seconds": round(result.seconds, 1),
            "failures": result.manifest["failures"] + result.manifest["rejected"],
        }
    )
    return 0 if counts["done"] else 1


def train_parser() -> argparse.ArgumentParser:
    from brats.runtime import LocalRay
    from brats.train.config import TrainConfig

    return build_parser(
        "brats train",
        "Train the 3D U-Net with Ray Train (multi-worker TensorFlow); checkpoints to storage; "
        "rerun with the same --name and --storage to resume.",
        TrainConfig,
        LocalRay,
    )


def run_train(argv: Sequence[str] | None = None) -> int:
    from brats.resources import ActorsNotStarted
    from brats.train.config import TrainConfig, TrainingError
    from brats.train.job import train
    from brats.volume.labels import SchemeError

    config = _config_on_ray(train_parser(), TrainConfig, argv)
    try:
        result = train(config)
    except (TrainingError, SchemeError, ActorsNotStarted) as err:
        log.error("%s", err)
        _print_json({"status": "failed", "error": str(err)})
        return 1
    summary = {
        "status": "ok",
        "run": result.run,
        "model": result.model,
        "epochs": len(result.history),
        "best": _best_epoch(result.best),
        "seconds": round(result.seconds, 1),
    }
    if config.folds > 1:  # the history is every fold's; best, the folds' mean
        summary |= {"folds": config.folds, "epochs": config.epochs}
    _print_json(summary)
    return 0


def _best_epoch(row: dict[str, Any]) -> dict[str, Any]:
    """The best epoch's number, validation Dice and chosen postprocessing, rounded (its whole
    row is in the run's ``history.csv``)."""
    keep = ("epoch", "postprocessing", "val_dice_", "val_post_dice_")
    return {
        k: round(v, 4) if isinstance(v, float) else v for k, v in row.items() if k.startswith(keep)
    }


def segment_parser() -> argparse.ArgumentParser:
    from brats.segment.job import segment_parser

    return segment_parser("brats segment")


def run_segment(argv: Sequence[str] | None = None) -> int:
    from brats.segment.job import SegmentConfig, segment

    return _run_report_job(segment_parser(), SegmentConfig, segment, argv)


def evaluate_parser() -> argparse.ArgumentParser:
    from brats.evaluate.job import EvaluateConfig
    from brats.runtime import LocalRay

    return build_parser(
        "brats evaluate",
        "Score any predicted label volumes against ground truth on Ray Data: whole-volume and "
        "BraTS 2023 lesion-wise Dice and HD95, NSD, sensitivity, specificity; records and a "
        "report.",
        EvaluateConfig,
        LocalRay,
    )


def run_evaluate(argv: Sequence[str] | None = None) -> int:
    from brats.evaluate.job import EvaluateConfig, evaluate

    return _run_report_job(evaluate_parser(), EvaluateConfig, evaluate, argv)


def _run_report_job(
    parser: argparse.ArgumentParser,
    cls: type[J],
    job: Callable[[J], JobResult],
    argv: Sequence[str] | None,
) -> int:
    """Run a records-and-report job (:mod:`brats.report.batch`) on Ray and print its
    summary, or ``{"status": "failed", "error"}`` when it cannot run (exit 1); else its
    :meth:`~brats.report.batch.JobResult.exit_code`."""
    from brats.report.batch import JobError

    config = _config_on_ray(parser, cls, argv)
    try:
        result = job(config)
    except JobError as err:
        log.error("%s", err)
        _print_json({"status": "failed", "error": str(err)})
        return 1
    _print_json(result.summary())
    return result.exit_code(fail_on_error=config.fail_on_error)


def synth_parser() -> argparse.ArgumentParser:
    from brats.devtools.synth import SynthCommand, add_convention_flag

    parser = build_parser(
        "brats synth",
        "Write a seeded BraTS-like cohort built on the MNI152 template.",
        SynthCommand,
    )
    add_convention_flag(parser)
    return parser


def run_synth(argv: Sequence[str] | None = None) -> int:
    from brats.devtools.synth import SynthCommand, generate_cohort
    from brats.storage import resolve

    _, command = parse_or_exit(synth_parser(), argv, lambda a: parse_config(SynthCommand, a))
    config = command.synth
    began = time.perf_counter()
    ids = generate_cohort(
        command.out, command.cases, config, unlabeled=command.unlabeled, start=command.start
    )
    print(
        f"wrote {len(ids)} cases ({command.unlabeled} unlabeled, {config.convention}"
        f", {'x'.join(map(str, config.shape))}) to {resolve(command.out).uri} in "
        f"{time.perf_counter() - began:.1f} s"
    )
    return 0


def nightly_parser() -> argparse.ArgumentParser:
    """Arguments of ``jobs/nightly.py`` (those after ``--`` go to the segmentation job)."""
    from brats.segment.nightly import NightlyConfig

    return build_parser(
        "jobs/nightly.py",
        "Submit the segmentation job for one date to a running Ray cluster (idempotent per "
        "date). Arguments after -- are passed to jobs/segment.py.",
        NightlyConfig,
    )


def parse_nightly(argv: Sequence[str]) -> Any:
    """A checked :class:`~brats.segment.nightly.NightlyConfig` (exits 2 on bad arguments)."""
    from brats.segment.nightly import NightlyConfig

    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    return parse_or_exit(
        nightly_parser(),
        argv,
        lambda a: parse_config(NightlyConfig, a, segment_args=tuple(extra)),
    )[1]


def run_nightly(argv: Sequence[str] | None = None) -> int:
    from brats.runtime import setup_logging
    from brats.segment.nightly import EXIT_CLUSTER, connect, run

    config = parse_nightly(sys.argv[1:] if argv is None else argv)
    setup_logging()
    summary: dict[str, Any] = {"submission_id": config.submission_id, "out": config.out}
    try:
        code, summary = run(config, connect(config.address))
    except Exception as err:  # the cluster is unreachable, refuses the token or the job
        text = str(err).lower()
        hint = ""
        if "authentication" in text or "token" in text:
            hint = (
                " (run with RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token "
                "or RAY_AUTH_TOKEN_PATH)"
            )
        log.error("cannot submit to %s: %s%s", config.address, err, hint)
        summary.update(status="error", error=f"{type(err).__name__}: {err}")
        code = EXIT_CLUSTER
    _print_json(summary)
    return int(code)


def app_parser() -> argparse.ArgumentParser:
    from brats.app import AppConfig

    return build_parser(
        "brats app",
        "Serve the interactive segmentation app (Gradio) for one trained model.",
        AppConfig,
    )


def run_app(argv: Sequence[str] | None = None) -> int:
    from brats.app import AppConfig
    from brats.runtime import setup_logging

    _, config = parse_or_exit(app_parser(), argv, lambda a: parse_config(AppConfig, a))
    setup_logging()
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("brats app needs Gradio: pip install 'brats-ray[app]'", file=sys.stderr)
        return 2
    from brats.app import build_app, serve
    from brats.io.model_card import ArtifactError
    from brats.storage import StorageError

    try:
        app = build_app(config)
    except (ArtifactError, StorageError) as exc:
        log.error("cannot serve the model: %s", exc)
        return 1
    serve(app, host=config.host, port=config.port, limits=config.limits)
    return 0


def export_parser() -> argparse.ArgumentParser:
    from brats.io.export import ExportConfig

    return build_parser(
        "brats export",
        "Export a model folder (or an ensemble's) as ONNX or a TensorFlow SavedModel, with its "
        "model.json; the export is checked against Keras on one window before it is written.",
        ExportConfig,
    )


def run_export(argv: Sequence[str] | None = None) -> int:
    from brats.errors import BratsError
    from brats.io.export import ExportConfig, export_model
    from brats.runtime import setup_logging

    _, config = parse_or_exit(export_parser(), argv, lambda a: parse_config(ExportConfig, a))
    setup_logging()
    try:
        result = export_model(config)
    except BratsError as err:
        log.error("%s", err)
        return 1
    _print_json(
        {
            "out": result.out,
            "version": result.version,
            "max_difference": result.max_difference,
            "files": list(result.files),
        }
    )
    return 0


def schemes_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brats schemes",
        description="List the built-in label schemes (what --label-scheme takes), or show one "
        "scheme (a built-in name or a JSON file) as JSON.",
    )
    parser.add_argument("scheme", nargs="?", help="a built-in name or a JSON file to show")
    return parser


def run_schemes(argv: Sequence[str] | None = None) -> int:
    """One line per built-in scheme (values on disk, regions, images, source), or one scheme
    as JSON: a user scheme file is checked as the jobs would read it."""
    from brats.io.schemes import load_scheme
    from brats.volume.labels import SCHEMES, SchemeError

    args = schemes_parser().parse_args(argv)
    if args.scheme:
        try:
            scheme = load_scheme(args.scheme)
        except SchemeError as err:
            log.error("%s", err)
            return 2
        assert scheme is not None
        _print_json(scheme.to_dict())
        return 0
    for scheme in SCHEMES.values():
        values = ", ".join(f"{c.value} {c.name}" for c in scheme.classes)
        regions = ", ".join(scheme.regions)
        print(f"{scheme.name:10} {values:30} regions {regions:28} images {','.join(scheme.images)}")
        print(f"{'':10} {scheme.source}")
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "synth": run_synth,
    "ingest": run_ingest,
    "train": run_train,
    "segment": run_segment,
    "evaluate": run_evaluate,
    "nightly": run_nightly,
    "app": run_app,
    "schemes": run_schemes,
    "export": run_export,
}
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "synth": synth_parser,
    "ingest": ingest_parser,
    "train": train_parser,
    "segment": segment_parser,
    "evaluate": evaluate_parser,
    "nightly": nightly_parser,
    "app": app_parser,
    "schemes": schemes_parser,
    "export": export_parser,
}
"""The parser of each ``brats`` command (and of its ``jobs/*.py`` twin)."""


def main(argv: Sequence[str] | None = None) -> int:
    """``brats CMD [options]``; TensorFlow's environment is set first
    (:func:`brats.runtime.prepare_tensorflow`)."""
    from brats.runtime import prepare_tensorflow

    prepare_tensorflow()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        print("usage: brats {" + ",".join(COMMANDS) + "} [options]   (brats CMD -h for help)")
        return 0 if args and args[0] in ("-h", "--help") else 2
    return int(COMMANDS[args[0]](args[1:]))


if __name__ == "__main__":
    sys.exit(main())
