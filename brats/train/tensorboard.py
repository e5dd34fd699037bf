"""Epoch metrics as TensorBoard event files in the run's storage."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

from brats.storage import Location, write_bytes_atomic


class TensorBoardLog:
    """Writes scalars on this node and copies the event files into ``target`` after each
    write: on a cluster the driver's disk is another machine's."""

    def __init__(self, target: Location) -> None:
        import tensorflow as tf

        self._local = tempfile.mkdtemp(prefix="brats-tb-")
        self._writer = tf.summary.create_file_writer(self._local)
        self._target = target

    def write(self, metrics: Mapping[str, Any], *, step: int) -> None:
        """One scalar per numeric metric at ``step`` (others, such as the postprocessing
        rules, are left to ``history.csv``), then the upload."""
        import tensorflow as tf

        with self._writer.as_default(step=step):
            for key, value in metrics.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    tf.summary.scalar(key, value)
        self._writer.flush()
        upload_folder(self._local, self._target)


def upload_folder(local: str, target: Location) -> None:
    """Copy every file under the local folder ``local`` to the same relative key under
    ``target``, each object whole."""
    fs = target.filesystem()
    for root, _, files in os.walk(local):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, local).replace(os.sep, "/")
            with open(path, "rb") as fh:
                write_bytes_atomic(fs, target.join(rel), fh.read())
