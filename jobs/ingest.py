"""Ingest job: read + validate + normalize a NIfTI cohort with Ray Data.

python jobs/ingest.py --cohort s3://bucket/brats2020 --out s3://bucket/cohorts/v1
ray job submit --working-dir . -- python jobs/ingest.py --cohort ... --out ...
"""

import sys

from brats.cli import run_ingest
from brats.runtime import prepare_tensorflow

if __name__ == "__main__":
    prepare_tensorflow()  # before anything imports TensorFlow
    sys.exit(run_ingest())
