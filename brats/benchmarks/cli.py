"""``jobs/benchmark.py``: run one sub-benchmark, or all, and write the figures as JSON."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from datetime import UTC, datetime
from typing import Any

SUITES = ("ingest", "model", "train", "segment", "peer")


def _machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    from brats.runtime import setup_logging

    setup_logging()
    parser = argparse.ArgumentParser(prog="jobs/benchmark.py", description=__doc__)
    parser.add_argument("--json", default=None, help="write all figures to this file")
    sub = parser.add_subparsers(dest="suite", required=True)
    for name in SUITES:
        module = importlib.import_module(f"brats.benchmarks.{name}")
        module.add_arguments(sub.add_parser(name, help=(module.__doc__ or "").splitlines()[0]))
    sub.add_parser("all", help="every suite with its defaults")
    args = parser.parse_args(argv)

    names = SUITES if args.suite == "all" else (args.suite,)
    figures: dict[str, Any] = {"machine": _machine(), "started": datetime.now(UTC).isoformat()}
    for name in names:
        module = importlib.import_module(f"brats.benchmarks.{name}")
        suite_args = args
        if args.suite == "all":
            suite_parser = argparse.ArgumentParser()
            module.add_arguments(suite_parser)
            suite_args = suite_parser.parse_args([])
        print(f"== {name}", flush=True)
        figures[name] = module.run(suite_args)
    text = json.dumps(figures, indent=2)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
        print(f"figures written to {args.json}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
