"""Cohort segmentation: a trained model over a whole cohort with Ray Data.

    python jobs/segment.py --cohort ./incoming --model ./runs/unet-v1/model --out ./nightly
    ray job submit --working-dir . -- python jobs/segment.py --cohort s3://bucket/incoming \
        --model s3://bucket/runs/unet-v1/model --out s3://bucket/nightly --use-gpu --num-actors 4

Cases already done with this model version are skipped; the report covers the whole cohort.
"""

import sys

from brats.cli import run_segment
from brats.runtime import prepare_tensorflow

if __name__ == "__main__":
    prepare_tensorflow()  # before anything imports TensorFlow
    sys.exit(run_segment())
