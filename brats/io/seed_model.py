"""The ``seed`` preset's published network (``brats_3d.hdf5``, a Keras 2 HDF5 file of the
artifact's architecture with 3 input channels) as an artifact (:mod:`brats.io.artifact`): the
architecture is built in code and only the weight arrays are read from the file, after their
shapes were checked from the file's headers.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from dataclasses import replace

from brats.io.artifact import MAX_MODEL_BYTES, check_weight_shapes, save_artifact
from brats.io.model_card import SEED_INFO, ArtifactError, ModelCard, ModelInfo, sha256_hex
from brats.network.unet import build_unet
from brats.storage import Location, StorageError, read_bytes, redact, resolve


def import_seed_hdf5(
    source: str | os.PathLike[str], where: str | Location, info: ModelInfo = SEED_INFO
) -> ModelCard:
    """Turn the ``seed`` preset's Keras 2 HDF5 model (``brats_3d.hdf5``) into an artifact.

    The network of ``info.unet`` (the ``seed`` preset's by default) is built in code and the
    weight arrays are read from the file by layer order (how Keras matches legacy HDF5
    files; the U-Net creates its layers in that order). The file's model config,
    training config and optimizer state are ignored. Both legacy layouts load: a whole model
    (``model.save``: weights under ``model_weights/<layer>/``) and ``save_weights``.

    Args:
        source: path or URI of the HDF5 file.
        where: folder for ``model.keras`` + ``model.json``.
        info: the imported model's description; the source file's name and sha256 are added
            to its ``training`` notes.

    Returns:
        The card written to ``model.json``.

    Raises:
        ArtifactError: not an HDF5 file, not a Keras HDF5 weights layout, or weights whose
            count or shapes do not fit the architecture.
    """
    import h5py

    src = resolve(os.fspath(source))
    name = redact(src.uri)
    try:
        data = read_bytes(src.filesystem(), src.path, max_bytes=MAX_MODEL_BYTES)
    except (FileNotFoundError, StorageError) as exc:
        raise ArtifactError(f"{name}: cannot read the seed preset's HDF5 model ({exc})") from None
    model = build_unet(info.unet)
    with tempfile.TemporaryDirectory(prefix="brats-seed-") as tmp:
        # The ".h5" suffix (not ".weights.h5", not ".keras") selects Keras' legacy loader.
        path = os.path.join(tmp, "seed.h5")
        with open(path, "wb") as fh:
            fh.write(data)
        if not h5py.is_hdf5(path):
            raise ArtifactError(f"{name}: not an HDF5 file")
        with h5py.File(path, "r") as f:
            group = f.get("model_weights", f)
            if "layer_names" not in group.attrs:
                raise ArtifactError(
                    f"{name}: no Keras 2 'layer_names' in the HDF5 file; expected a model "
                    "saved by Keras 2 model.save or save_weights"
                )
            check_weight_shapes(group, model, name)
        try:
            model.load_weights(path)
        except ValueError as exc:
            raise ArtifactError(f"{name}: weights do not fit the architecture: {exc}") from None
    training = {
        **info.training,
        "imported_from": posixpath.basename(src.path),
        "source_sha256": sha256_hex(data),
    }
    return save_artifact(model, replace(info, training=training), where)
