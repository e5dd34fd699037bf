"""What the batch jobs write and read back: the per-case record (the one output schema of the
segment and evaluate jobs), the report tables, summary and HTML."""
