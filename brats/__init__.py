"""brats: BraTS brain-tumor segmentation as distributed jobs on Ray.

Importing it sets nothing and imports neither TensorFlow nor Ray: entry points set
TensorFlow's environment (:func:`brats.runtime.prepare_tensorflow`) before it loads.
"""

__version__ = "0.1.0"
