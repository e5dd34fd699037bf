"""Segmentation: the one predictor, the per-case records, the Ray Data job, the nightly
submitter."""
