"""Nightly segmentation: submit jobs/segment.py for one date to a running Ray cluster.

    RAY_AUTH_MODE=token python jobs/nightly.py --address http://127.0.0.1:8265 \
        --cohort s3://bucket/incoming --model s3://bucket/runs/unet-v1/model \
        --out-root s3://bucket/nightly --wait -- --use-gpu --num-actors 8

Submits `python jobs/segment.py ... --out s3://bucket/nightly/<today>` as the Ray job
`brats-segment-<today>` (a second run for the same date reports "already submitted").
The cron line and exit codes are in brats/segment/nightly.py.
"""

import sys

from brats.cli import run_nightly
from brats.runtime import prepare_tensorflow

if __name__ == "__main__":
    prepare_tensorflow()  # before anything imports TensorFlow
    sys.exit(run_nightly())
