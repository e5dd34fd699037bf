"""Scoring any predictions against ground truth: pairing, the job."""
