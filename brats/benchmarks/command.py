"""``jobs/benchmark.py SUITE [options]``: the parser, with one subcommand per suite (each
suite's settings dataclass gives its options) and ``all``, and the run that prints each
suite's figures and writes them all as JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from brats.options import add_options, parse_config

BENCHMARKS = (
    "ingest",
    "model",
    "train",
    "segment",
    "peer",
    "augment",
    "evaluate",
    "gpu",
    "recipe",
    "scale",
)
"""The suites of ``jobs/benchmark.py``, one module each under :mod:`brats.benchmarks`."""
LONG_BENCHMARKS = ("recipe", "scale")
"""Suites ``all`` leaves out: ``recipe`` trains several models (most of an hour on 2 cores),
``scale`` segments and evaluates 1,100 cases (minutes)."""


def _benchmark_settings(name: str) -> type:
    import importlib

    module = importlib.import_module(f"brats.benchmarks.{name}")
    return getattr(module, f"{name.capitalize()}Benchmark")


def benchmark_parser() -> argparse.ArgumentParser:
    """``jobs/benchmark.py SUITE [options]``: one subcommand per suite, and ``all``."""
    parser = argparse.ArgumentParser(
        prog="jobs/benchmark.py",
        description="Run one benchmark suite, or all with their defaults; each prints ratios "
        "measured side by side in one run, and the figures are written as JSON.",
    )
    parser.add_argument("--json", default=None, help="write all figures to this file")
    suites = parser.add_subparsers(dest="suite", required=True)
    for name in BENCHMARKS:
        import importlib

        doc = (importlib.import_module(f"brats.benchmarks.{name}").__doc__ or "").splitlines()[0]
        add_options(suites.add_parser(name, help=doc, description=doc), _benchmark_settings(name))
    suites.add_parser("all", help=f"every suite with its defaults but {', '.join(LONG_BENCHMARKS)}")
    return parser


def run_benchmark(argv: Sequence[str] | None = None) -> int:
    import importlib
    import os
    import platform
    from datetime import UTC, datetime

    from brats.runtime import setup_logging

    setup_logging()
    args = benchmark_parser().parse_args(argv)
    every = tuple(b for b in BENCHMARKS if b not in LONG_BENCHMARKS)
    names = every if args.suite == "all" else (args.suite,)
    machine = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    figures: dict[str, Any] = {"machine": machine, "started": datetime.now(UTC).isoformat()}
    for name in names:
        module = importlib.import_module(f"brats.benchmarks.{name}")
        cls = _benchmark_settings(name)
        settings = cls() if args.suite == "all" else parse_config(cls, args)
        print(f"== {name}", flush=True)
        extra = {"asked_by_name": args.suite == name} if name == "peer" else {}
        figures[name] = module.run(settings, **extra)
    text = json.dumps(figures, indent=2)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
        print(f"figures written to {args.json}")
    else:
        print(text)
    return 0
