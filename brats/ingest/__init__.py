"""Ingest: a NIfTI cohort read, validated and normalized with Ray Data into Parquet shards."""
