"""The ingest job under its earlier name: ``jobs/preprocess.py`` runs ``jobs/ingest.py``."""

import sys

from brats.cli import run_ingest

if __name__ == "__main__":
    sys.exit(run_ingest())
