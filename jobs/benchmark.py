"""Benchmarks: each prints ratios measured side by side in one run, and writes JSON.

python jobs/benchmark.py ingest [--cases 8 --shape 240 240 155]
python jobs/benchmark.py model [--size 128]
python jobs/benchmark.py all --json bench-out/figures.json
"""

import sys

from brats.benchmarks.command import run_benchmark
from brats.runtime import prepare_tensorflow

if __name__ == "__main__":
    prepare_tensorflow()  # before anything imports TensorFlow
    sys.exit(run_benchmark())
