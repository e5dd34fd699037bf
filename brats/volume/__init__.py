"""Volume math: pure numpy and scipy, no I/O.

Nothing under this package imports Ray, TensorFlow, Keras, nibabel, fsspec, s3fs or pyarrow, so
every function here can be tested on tiny arrays and used anywhere.
"""
