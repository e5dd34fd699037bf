"""The ingest job under its earlier name: ``jobs/preprocess.py`` runs ``jobs/ingest.py``."""

import sys

from brats.cli import run_ingest
from brats.runtime import prepare_tensorflow

if __name__ == "__main__":
    prepare_tensorflow()  # before anything imports TensorFlow
    sys.exit(run_ingest())
