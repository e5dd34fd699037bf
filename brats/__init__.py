"""brats: BraTS brain-tumor segmentation as distributed jobs on Ray."""

from brats.runtime import quiet_tensorflow, use_onednn

__version__ = "0.1.0"

# Every process that imports brats (a job's driver, Ray workers, actors) sets TensorFlow's
# log level and turns its oneDNN kernels on before anything imports TensorFlow.
quiet_tensorflow()
use_onednn()
