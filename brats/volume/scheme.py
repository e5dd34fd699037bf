"""The :class:`LabelScheme` type: what every label of a dataset means, as pure data (its
classes, regions, decode order, images, truth suffix and lesion-wise task), checked for
consistency when made. The built-in schemes, reading one from JSON and converting label
volumes are :mod:`brats.volume.labels`'.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

IMAGES: Final = ("flair", "t1", "t1ce", "t2")
"""Canonical image names (BraTS 2020 spelling), the default images a scheme needs."""
LESION_TASKS: Final = ("glioma", "metastasis", "paediatric", "meningioma_rt", "meningioma")
"""Which challenge's lesion-wise settings a scheme is scored with
(:mod:`brats.volume.lesion_settings`); ``meningioma`` is pre-operative, ``meningioma_rt`` the
2024 radiotherapy target."""
MAX_CLASSES: Final = 32
_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}", re.ASCII)


class LabelError(ValueError):
    """A segmentation holds a label that its scheme does not define."""


class SchemeError(ValueError):
    """A label scheme that cannot be used: malformed, inconsistent or unknown."""


@dataclass(frozen=True)
class LabelClass:
    """One class of a scheme.

    Attributes:
        name: short name, used in record keys when the class is a region (``"NETC"``).
        value: the value a dataset writes on disk for it (1..255).
        colour: overlay colour, RGB.
        text: what a person reads in a legend.
    """

    name: str
    value: int
    colour: tuple[int, int, int]
    text: str


@dataclass(frozen=True)
class LabelScheme:
    """What every label of a dataset means (see the module docstring).

    Attributes:
        name: the scheme's name (``--label-scheme``; stored in manifests and ``model.json``).
        classes: the foreground classes; internal class ``i`` is ``classes[i - 1]``.
        regions: region name -> class names, in report order (record keys
            ``dice_<REGION>``, ...).
        decode: ``(region, class)`` pairs: the network's region outputs, in channel order,
            and the class each paints where its probability passes the threshold; later
            pairs paint over earlier ones (nnU-Net's ``regions_class_order``).
        images: the images a case must have (canonical names from :data:`IMAGES`).
        truth: the segmentation file's suffix (``seg``; ``gtv`` for meningioma radiotherapy).
        lesion_task: whose lesion-wise settings score it (:data:`LESION_TASKS`).
        source: where the definition comes from (shown in ``brats schemes``).
    """

    name: str
    classes: tuple[LabelClass, ...]
    regions: Mapping[str, tuple[str, ...]]
    decode: tuple[tuple[str, str], ...]
    images: tuple[str, ...] = IMAGES
    truth: str = "seg"
    lesion_task: str = "glioma"
    source: str = ""
    _table_in: npt.NDArray[np.int16] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_scheme(self)
        object.__setattr__(self, "regions", {k: tuple(v) for k, v in self.regions.items()})
        table = np.full(256, -1, dtype=np.int16)
        table[0] = 0
        for i, c in enumerate(self.classes, start=1):
            table[c.value] = i
        object.__setattr__(self, "_table_in", table)

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def n_classes(self) -> int:
        """Internal classes, background included."""
        return len(self.classes) + 1

    @property
    def disk_values(self) -> tuple[int, ...]:
        """On-disk value of every internal class, background (0) first."""
        return (0, *(c.value for c in self.classes))

    @property
    def output_regions(self) -> tuple[str, ...]:
        """The network's region outputs, in channel order."""
        return tuple(region for region, _ in self.decode)

    def class_index(self, name: str) -> int:
        """Internal class of the class called ``name``."""
        for i, c in enumerate(self.classes, start=1):
            if c.name == name:
                return i
        raise SchemeError(f"scheme {self.name} has no class {name!r}")

    def region_classes(self, region: str) -> tuple[int, ...]:
        """Internal classes of ``region``."""
        try:
            names = self.regions[region]
        except KeyError:
            raise ValueError(
                f"unknown region {region!r} in scheme {self.name}; expected one of "
                f"{list(self.regions)}"
            ) from None
        return tuple(self.class_index(n) for n in names)

    def output_classes(self) -> tuple[tuple[int, ...], ...]:
        """Internal classes of each region output, in channel order (the losses' targets)."""
        return tuple(self.region_classes(r) for r in self.output_regions)

    @property
    def outer_outputs(self) -> tuple[int, ...]:
        """The region outputs no other output contains, by channel: the ones whose classes
        together cover the tumour (WT; WT and RC where a cavity is labelled on its own; GTV).
        Of two outputs with the same classes, the first."""
        sets = [frozenset(c) for c in self.output_classes()]
        return tuple(
            i
            for i, s in enumerate(sets)
            if not any(s < t or (s == t and j < i) for j, t in enumerate(sets))
        )

    def colours(self) -> dict[int, tuple[int, int, int]]:
        """Internal class -> overlay colour."""
        return {i: c.colour for i, c in enumerate(self.classes, start=1)}

    def legend(self) -> dict[int, str]:
        """Internal class -> legend text."""
        return {i: c.text for i, c in enumerate(self.classes, start=1)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; :func:`brats.volume.labels.scheme_from_dict` inverts it."""
        return {
            "name": self.name,
            "classes": [
                {"name": c.name, "value": c.value, "colour": list(c.colour), "text": c.text}
                for c in self.classes
            ],
            "regions": {k: list(v) for k, v in self.regions.items()},
            "region_order": list(self.regions),
            "decode": [list(pair) for pair in self.decode],
            "images": list(self.images),
            "truth": self.truth,
            "lesion_task": self.lesion_task,
            "source": self.source,
        }


def _check_scheme(s: LabelScheme) -> None:
    """Every way a scheme can contradict itself, as a :class:`SchemeError` naming the entry."""
    where = f"label scheme {s.name!r}"
    if not isinstance(s.name, str) or not _NAME_RE.fullmatch(s.name):
        raise SchemeError(f"{where}: a name is a letter then letters, digits or _")
    if not s.classes or len(s.classes) > MAX_CLASSES:
        raise SchemeError(f"{where}: needs 1..{MAX_CLASSES} classes")
    names = [c.name for c in s.classes]
    values = [c.value for c in s.classes]
    for c in s.classes:
        if not isinstance(c.name, str) or not _NAME_RE.fullmatch(c.name):
            raise SchemeError(f"{where}: class name {c.name!r} is not a short name")
        if isinstance(c.value, bool) or not isinstance(c.value, int) or not 1 <= c.value <= 255:
            raise SchemeError(f"{where}: class {c.name} has value {c.value!r}; use 1..255")
        if len(c.colour) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in c.colour):
            raise SchemeError(f"{where}: class {c.name} colour must be three integers 0..255")
    for label, seen in (("class name", names), ("value", [str(v) for v in values])):
        twice = sorted({x for x in seen if seen.count(x) > 1})
        if twice:
            raise SchemeError(f"{where}: {label}s {twice} are used by more than one class")
    if not s.regions:
        raise SchemeError(f"{where}: needs at least one region")
    for region, members in s.regions.items():
        if not isinstance(region, str) or not _NAME_RE.fullmatch(region):
            raise SchemeError(f"{where}: region name {region!r} is not a short name")
        unknown = [m for m in members if m not in names]
        if not members or unknown:
            raise SchemeError(
                f"{where}: region {region} names unknown classes {unknown or '(none)'}; "
                f"classes are {names}"
            )
    if not s.decode:
        raise SchemeError(f"{where}: decode needs at least one (region, class) pair")
    painted: set[str] = set()
    for pair in s.decode:
        if len(pair) != 2:
            raise SchemeError(f"{where}: decode entry {pair!r} is not a (region, class) pair")
        region, cls = pair
        if region not in s.regions:
            raise SchemeError(f"{where}: decode names unknown region {region!r}")
        if cls not in s.regions[region]:
            raise SchemeError(f"{where}: decode paints {cls!r}, which is not in region {region}")
        painted.add(cls)
    missing = [n for n in names if n not in painted]
    if missing:
        raise SchemeError(f"{where}: decode never paints classes {missing}")
    regions_out = [r for r, _ in s.decode]
    if len(set(regions_out)) != len(regions_out):
        raise SchemeError(f"{where}: decode names a region twice")
    bad = [m for m in s.images if m not in IMAGES]
    if not s.images or bad or len(set(s.images)) != len(s.images):
        raise SchemeError(f"{where}: images must be distinct names from {IMAGES}, got {s.images}")
    if not isinstance(s.truth, str) or not re.fullmatch(r"[a-z][a-z0-9]{0,15}", s.truth):
        raise SchemeError(f"{where}: truth suffix {s.truth!r} must be a short lower-case word")
    if s.lesion_task not in LESION_TASKS:
        raise SchemeError(f"{where}: lesion_task must be one of {LESION_TASKS}")
