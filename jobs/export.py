"""Export a trained model as ONNX or a TensorFlow SavedModel for serving outside Keras.

    python jobs/export.py --model ./runs/unet-v1/model --format onnx --out ./serve/unet-v1
    python jobs/export.py --model s3://bucket/runs/unet-v1/model --format saved_model \
        --out s3://bucket/serve/unet-v1

Writes model.onnx (or saved_model/) and model.json; an ensemble, one fold_<i>/ per fold.
"""

import sys

from brats.cli import run_export
from brats.runtime import prepare_tensorflow

if __name__ == "__main__":
    prepare_tensorflow()  # before anything imports TensorFlow
    sys.exit(run_export())
