"""Segment one case with an exported model and nothing of brats: ONNX Runtime, NumPy, SciPy
and nibabel only. What a serving user writes around ``brats export --format onnx``.

    python examples/serve_onnx.py EXPORT OUT.nii.gz FLAIR T1 T1CE T2 [--values brats2020]

EXPORT is the folder ``brats export`` wrote (``model.onnx`` and ``model.json``; an ensemble's
folds are averaged); the images come in the order of ``model.json``'s ``modalities``, and
the mask is written in the first image's geometry, in the label values of the card's
``label_scheme`` (the segmentation job writes BraTS 2020-named cases in BraTS 2020 values
whatever the model's glioma scheme; ``--values brats2020`` does the same here). Every step
follows what ``model.json`` says, so the mask is the segmentation job's to within the float
round-off of two runtimes:

1. read each image as float32 (the file's scaling applied), in the file's voxel order;
2. crop all to the box of voxels where any image is nonzero, normalize (``zscore``: each
   channel inside the brain, background 0; ``minmax``: each channel to [0, 1] over the
   box), and store as float16 (as an ingested cohort is);
3. at another voxel size than the card's ``target_spacing``: cubic B-splines to it (and
   linear back for the probabilities), over the same field of view; nearest neighbour along
   a slice axis more than 3 times coarser than the others (nnU-Net's separate-z rule);
4. sliding windows of ``patch_size`` at half overlap, blended with a Gaussian (sigma 1/8 of
   the window), averaged over the 8 axis flips when ``tta`` is true;
5. region sigmoids decoded in the scheme's ``decode`` order (each region paints its class
   where its probability is over 0.5), or the most probable class of a softmax;
6. the card's ``postprocessing`` rules (components of a region kept by size), then pasted
   back into the whole grid.

Not handled here: the predictor's optional ``--min-et-voxels``.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime
from scipy import ndimage


def load(export: Path) -> tuple[dict, list]:
    """The card and one ONNX Runtime session per network (an ensemble's folds)."""
    card = json.loads((export / "model.json").read_text())
    folders = [export / f["folder"] for f in card.get("folds", [])] or [export]
    sessions = [
        onnxruntime.InferenceSession(str(f / "model.onnx"), providers=["CPUExecutionProvider"])
        for f in folders
    ]
    return card, sessions


def read_images(paths: list[str]) -> tuple[np.ndarray, nib.Nifti1Image]:
    images = [nib.load(p) for p in paths]
    data = np.stack([np.asarray(i.get_fdata(dtype=np.float32)) for i in images])
    return data, images[0]


# The scheme of a model card that names none (exported before exports named theirs).
GLIOMA = {
    "classes": [
        {"name": "NETC", "value": 1},
        {"name": "SNFH", "value": 2},
        {"name": "ET", "value": 3},
    ],
    "regions": {"WT": ["NETC", "SNFH", "ET"], "TC": ["NETC", "ET"], "ET": ["ET"]},
    "decode": [["WT", "SNFH"], ["TC", "NETC"], ["ET", "ET"]],
}
ANISOTROPY = 3.0


def prepare(data: np.ndarray, normalization: str) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Crop to the brain's box, normalize each channel, float16."""
    brain = np.any(data != 0, axis=0)
    box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in np.nonzero(brain))
    crop = data[(slice(None), *box)].astype(np.float64)
    mask = brain[box]
    out = np.zeros(crop.shape, np.float32)
    for c, channel in enumerate(crop):
        if normalization == "minmax":
            span = channel.max() - channel.min()
            out[c] = (channel - channel.min()) / span if span > 0 else 0.0
            continue
        inside = channel[mask]
        std = inside.std()
        if std > 0:
            out[c] = np.where(mask, (channel - inside.mean()) / std, 0.0)
    return out.astype(np.float16).astype(np.float32), box


def slice_axis(spacing: np.ndarray, target: np.ndarray) -> int | None:
    """The axis resampled by nearest neighbour: the coarsest of an anisotropic spacing (the
    case's, else the target's), if it is the only coarsest."""
    for s in (spacing, target):
        if s.max() / s.min() > ANISOTROPY:
            coarsest = np.flatnonzero(s == s.max())
            return int(coarsest[0]) if coarsest.size == 1 else None
    return None


def resample(
    volume: np.ndarray, shape: tuple[int, ...], order: int, axis: int | None
) -> np.ndarray:
    """Each channel of ``(C, d, h, w)`` onto ``shape`` over the same field of view: splines
    of ``order``, nearest neighbour along ``axis``."""
    factors = [n / o for n, o in zip(shape, volume.shape[1:], strict=True)]
    out = []
    for channel in volume:
        if axis is None:
            out.append(ndimage.zoom(channel, factors, order=order, mode="nearest", grid_mode=True))
            continue
        inplane = [1.0 if a == axis else f for a, f in enumerate(factors)]
        along = [factors[a] if a == axis else 1.0 for a in range(3)]
        channel = ndimage.zoom(channel, inplane, order=order, mode="nearest", grid_mode=True)
        out.append(ndimage.zoom(channel, along, order=0, mode="nearest", grid_mode=True))
    return np.stack(out).astype(np.float32)


def gaussian(window: tuple[int, ...]) -> np.ndarray:
    axes = [np.exp(-0.5 * ((np.arange(n) - (n - 1) / 2) / (n / 8)) ** 2) for n in window]
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(weights / weights.max(), 1e-3).astype(np.float32)


def starts(size: int, window: int) -> list[int]:
    if size <= window:
        return [0]
    return [*range(0, size - window, window // 2), size - window]


def center(volume: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Center-pad with zeros or center-crop the last three axes to ``size``."""
    out = np.zeros((*volume.shape[:-3], *size), volume.dtype)
    src, dst = [], []
    for have, want in zip(volume.shape[-3:], size, strict=True):
        lo = abs(have - want) // 2
        src.append(slice(lo, lo + want) if have >= want else slice(0, have))
        dst.append(slice(0, want) if have >= want else slice(lo, lo + have))
    out[(..., *dst)] = volume[(..., *src)]
    return out


def predict(image: np.ndarray, sessions: list, card: dict) -> np.ndarray:
    """``(C, d, h, w)`` -> ``(K, d, h, w)`` probabilities: sliding windows, Gaussian blend,
    flips when the card says ``tta``, folds averaged."""
    window = tuple(card["patch_size"])
    spatial = image.shape[1:]
    padded = tuple(max(s, w) for s, w in zip(spatial, window, strict=True))
    volume = center(image, padded)
    weights = gaussian(window)
    unet = card["unet"]
    n_out = unet["n_regions"] if unet["output"] == "regions" else unet["n_classes"]
    probs = np.zeros((n_out, *padded), np.float32)
    norm = np.zeros(padded, np.float32)
    flips = [a for r in range(4) for a in itertools.combinations((1, 2, 3), r)]
    for origin in itertools.product(*(starts(s, w) for s, w in zip(padded, window, strict=True))):
        box = tuple(slice(o, o + w) for o, w in zip(origin, window, strict=True))
        x = np.moveaxis(volume[(slice(None), *box)], 0, -1)[None]
        total = np.zeros((*window, n_out), np.float32)
        for session in sessions:
            name = session.get_inputs()[0].name
            for axes in flips if card["tta"] else [()]:
                flipped = np.ascontiguousarray(np.flip(x, axes)) if axes else x
                out = session.run(None, {name: flipped})[0]
                total += (np.flip(out, axes) if axes else out)[0]
        total /= len(sessions) * (len(flips) if card["tta"] else 1)
        probs[(slice(None), *box)] += np.moveaxis(total, -1, 0) * weights
        norm[box] += weights
    return center(probs / norm, spatial)


def decode(probs: np.ndarray, card: dict) -> np.ndarray:
    """Internal classes (1.. in the scheme's class order; 0 background)."""
    scheme = card["label_scheme"] or GLIOMA
    names = [c["name"] for c in scheme["classes"]]
    if card["unet"]["output"] != "regions":
        return np.argmax(probs, axis=0).astype(np.uint8)
    labels = np.zeros(probs.shape[1:], np.uint8)
    for channel, (_, cls) in enumerate(scheme["decode"]):
        labels[probs[channel] > 0.5] = names.index(cls) + 1
    return labels


def postprocess(labels: np.ndarray, card: dict) -> np.ndarray:
    """The card's component rules, region by region in decode order: removed voxels take the
    class of the nearest enclosing region earlier in the decode order, else background."""
    scheme = card["label_scheme"] or GLIOMA
    names = [c["name"] for c in scheme["classes"]]
    order = [region for region, _ in scheme["decode"]]
    for region, rule in card["postprocessing"].items():
        classes = [names.index(c) + 1 for c in scheme["regions"][region]]
        inner = set(scheme["regions"][region])
        fallback = 0
        for outer, cls in reversed(scheme["decode"][: order.index(region)]):
            if inner <= set(scheme["regions"][outer]):
                fallback = names.index(cls) + 1
                break
        mask = np.isin(labels, classes)
        components, n = ndimage.label(mask)
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        keep = np.zeros(n + 1, bool)
        if n:
            if isinstance(rule, str) and rule.startswith("below:"):
                keep[1:] = sizes[1:].sum() >= int(rule.split(":")[1])
            elif rule == "largest":
                keep[1 + int(np.argmax(sizes[1:]))] = True
            else:
                keep[1:] = sizes[1:] >= int(rule)
        labels = labels.copy()
        labels[mask & ~keep[components]] = fallback
    return labels


def segment(
    export: Path, images: list[str], values: str | None = None
) -> tuple[np.ndarray, nib.Nifti1Image]:
    """The mask in label values on disk (the card's scheme's; ``brats2020``: ET as 4), and
    the reference image for its geometry."""
    card, sessions = load(export)
    data, reference = read_images(images)
    image, box = prepare(data, card["normalization"])
    spacing = np.asarray(reference.header.get_zooms()[:3], np.float64)
    target = card.get("target_spacing")
    source = image.shape[1:]
    if target is not None and not np.allclose(spacing, target, rtol=1e-3):
        target = np.asarray(target, np.float64)
        axis = slice_axis(spacing, target)
        shape = tuple(
            max(1, round(n * s / t)) for n, s, t in zip(source, spacing, target, strict=True)
        )
        probs = predict(resample(image, shape, 3, axis), sessions, card)
        probs = np.clip(resample(probs, source, 1, axis), 0.0, 1.0)
    else:
        probs = predict(image, sessions, card)
    labels = np.zeros(data.shape[1:], np.uint8)
    labels[box] = decode(probs, card)
    labels = postprocess(labels, card)
    classes = (card["label_scheme"] or GLIOMA)["classes"]
    on_disk = [c["value"] for c in classes]
    if values == "brats2020":  # BraTS 2020 writes ET as 4 (NCR 1, ED 2)
        on_disk = [{"ET": 4}.get(c["name"], c["value"]) for c in classes]
    return np.array([0, *on_disk], np.uint8)[labels], reference


def main(argv: list[str]) -> int:
    values = None
    if "--values" in argv:
        at = argv.index("--values")
        values, argv = argv[at + 1], argv[:at] + argv[at + 2 :]
    if len(argv) < 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    export, out, images = Path(argv[0]), argv[1], argv[2:]
    mask, reference = segment(export, images, values)
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    nib.save(nib.Nifti1Image(mask, reference.affine, header), out)
    print(f"{out}: {mask.shape}, labels {sorted(int(v) for v in np.unique(mask))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
