"""The cohort report built from segmentation records: tables, summary, HTML."""
