"""brats: BraTS brain-tumor segmentation as distributed jobs on Ray."""

__version__ = "0.1.0"
