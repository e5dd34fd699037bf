"""Checkpoints of a run: written by rank 0, checked by hash, resumed from by every worker.

A checkpoint folder holds the weights, the optimizer's variables and ``state.json`` (epochs
done, history, the config, and the sha256 of both files), written last. A worker resumes
from the newest checkpoint in the run's storage whose files match their hashes
(:func:`checkpoint_candidates`), so a checkpoint whose upload broke is never used and a
finished epoch is not redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import tempfile
from typing import Any, Final

import numpy as np

from brats.storage import Location, read_bytes, redact
from brats.train.config import TrainingError

log = logging.getLogger(__name__)

WEIGHTS_FILE: Final = "model.weights.h5"
OPTIMIZER_FILE: Final = "optimizer.npz"
STATE_FILE: Final = "state.json"
MAX_STATE_BYTES: Final = 64 << 20


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checkpoint(folder: str, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """Weights, optimizer variables and ``state.json`` (with both files' sha256) into folder."""
    weights = os.path.join(folder, WEIGHTS_FILE)
    model.save_weights(weights)
    arrays = {f"v{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
    opt_path = os.path.join(folder, OPTIMIZER_FILE)
    np.savez(opt_path, **arrays)  # type: ignore[arg-type]
    state = {
        **state,
        "sha256": {WEIGHTS_FILE: _sha256_file(weights), OPTIMIZER_FILE: _sha256_file(opt_path)},
    }
    with open(os.path.join(folder, STATE_FILE), "w") as fh:
        json.dump(state, fh, indent=2)


def read_checkpoint_state(folder: str) -> dict[str, Any]:
    """``state.json`` of a checkpoint folder, after checking both files against its hashes."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path):
        raise TrainingError(f"checkpoint {folder} has no {STATE_FILE}: incomplete")
    with open(path) as fh:
        state: dict[str, Any] = json.load(fh)
    for name, expected in state.get("sha256", {}).items():
        file = os.path.join(folder, name)
        if not os.path.isfile(file) or _sha256_file(file) != expected:
            raise TrainingError(f"checkpoint {folder}: {name} is missing or corrupt")
    return state


def restore_checkpoint(folder: str, model: Any, optimizer: Any) -> dict[str, Any]:
    """Load weights and optimizer variables from a checked checkpoint; return its state."""
    state = read_checkpoint_state(folder)
    model.load_weights(os.path.join(folder, WEIGHTS_FILE))
    with np.load(os.path.join(folder, OPTIMIZER_FILE), allow_pickle=False) as saved:
        values = [saved[f"v{i:04d}"] for i in range(len(saved.files))]
    if len(values) != len(optimizer.variables):
        raise TrainingError(
            f"checkpoint {folder}: {len(values)} optimizer variables, model needs "
            f"{len(optimizer.variables)}"
        )
    for variable, value in zip(optimizer.variables, values, strict=True):
        variable.assign(value)
    return state


def checkpoint_candidates(run: Location) -> list[tuple[int, str]]:
    """``(epochs_done, path)`` of every checkpoint folder in the run with a readable
    ``state.json``, newest first.

    Ray Train restores the latest checkpoint its controller *registered*; a worker that dies
    right after ``report`` can leave the newest one uploaded but unregistered, and training
    would redo an epoch. Every checkpoint here is uploaded whole before ``report`` returns, and
    its files are checked against ``state.json`` before use, so the newest complete one in
    storage is the right place to resume.
    """
    fs = run.filesystem()
    if not fs.exists(run.path):
        return []
    found = []
    for entry in fs.ls(run.path, detail=True):
        name = posixpath.basename(str(entry["name"]).rstrip("/"))
        # Ray's checkpoint folders; its checkpoint_manager_snapshot.json is a file.
        if not name.startswith("checkpoint_") or entry.get("type") != "directory":
            continue
        path = run.join(name)
        try:
            raw = read_bytes(fs, posixpath.join(path, STATE_FILE), max_bytes=MAX_STATE_BYTES)
            found.append((int(json.loads(raw)["epochs_done"]), path))
        except FileNotFoundError:
            continue  # an upload that broke before state.json (written last): never used
        except (ValueError, KeyError, TypeError):
            continue  # unreadable state: every worker reads the same bytes and skips it too
    # Any other error (a storage hiccup) propagates: a worker that quietly fell back to an
    # older checkpoint than the others would train other weights and hang the collectives.
    return sorted(found, reverse=True)


def restore_latest(run: Location, model: Any, optimizer: Any) -> dict[str, Any] | None:
    """Restore the newest complete checkpoint of the run; ``None`` when it has none."""
    fs = run.filesystem()
    for _, path in checkpoint_candidates(run):
        try:
            if run.protocol == "file":
                return restore_checkpoint(path, model, optimizer)
            with tempfile.TemporaryDirectory(prefix="brats-restore-") as local:
                for name in (STATE_FILE, WEIGHTS_FILE, OPTIMIZER_FILE):
                    fs.get_file(posixpath.join(path, name), os.path.join(local, name))
                return restore_checkpoint(local, model, optimizer)
        except TrainingError as err:  # a hash mismatch: the same on every worker
            log.warning("skipping checkpoint %s: %s", redact(run.uri_of(path)), err)
    return None
