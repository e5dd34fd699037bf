"""Training job: the 3D U-Net on Ray Train, multi-worker TensorFlow, checkpoints and resume.

    python jobs/train.py --data ./cohort --storage ./runs --name unet-v1 --num-workers 2
    ray job submit --working-dir . -- python jobs/train.py --data s3://bucket/cohorts/v1 \
        --storage s3://bucket/runs --name unet-v1 --num-workers 8 --use-gpu

Rerunning with the same --name and --storage resumes from the latest complete checkpoint.
"""

import sys

from brats.cli import run_train
from brats.runtime import prepare_tensorflow

if __name__ == "__main__":
    prepare_tensorflow()  # before anything imports TensorFlow
    sys.exit(run_train())
