"""Tools for trying and testing brats: a generated cohort, faults on purpose, the demo."""
