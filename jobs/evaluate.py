"""Score any predictions against ground truth: BraTS 2023 lesion-wise and whole-volume figures.

    python jobs/evaluate.py --pred ./nnunet-preds --truth ./BraTS2023-val --out ./eval
    ray job submit --working-dir . -- python jobs/evaluate.py --pred s3://bucket/preds \
        --truth s3://bucket/truth --out s3://bucket/eval --name nnunet-fold0

Writes records/<case>.json, report.parquet, report.csv, summary.json, report.html, _SUCCESS.
"""

import sys

from brats.cli import run_evaluate
from brats.runtime import prepare_tensorflow

if __name__ == "__main__":
    prepare_tensorflow()  # before anything imports TensorFlow
    sys.exit(run_evaluate())
