"""Segmentation: the one predictor, the sliding window, the Ray Data job that writes masks and
records, the nightly submitter."""
