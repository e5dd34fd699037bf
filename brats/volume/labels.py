"""Label schemes: the one home for what a label means.

A :class:`LabelScheme` is pure data, in the spirit of nnU-Net's label manager: its classes
(name, value on disk, colour), its regions (named sets of classes, scored in their order), the
order in which the network's region outputs are painted back into classes, the images it
needs, and which challenge's lesion-wise settings it is scored with (the type, and the checks
that keep a scheme consistent, are :mod:`brats.volume.scheme`'s; this module has the
built-in schemes, reading one from JSON and the conversions of label volumes).

Inside the library a segmentation is a ``(D, H, W) uint8`` array of *internal* classes: 0 is
background and class ``i`` (1-based) is ``scheme.classes[i - 1]``. :func:`to_internal` and
:func:`to_disk` convert between that and the values a dataset writes on disk.

Built in (:data:`SCHEMES`), as the BraTS challenges' evaluation code defines them:

============  =========================================  ======================================
scheme        on disk                                    regions
============  =========================================  ======================================
brats2020     1 NCR, 2 ED, 4 ET                          WT {NCR,ED,ET}, TC {NCR,ET}, ET
brats2023     1 NETC, 2 SNFH, 3 ET                       WT, TC {NETC,ET}, ET
met2023       as brats2023 (metastasis lesion settings)  as brats2023
men2023       as brats2023 (meningioma lesion settings)  as brats2023
gli2024       1 NETC, 2 SNFH, 3 ET, 4 RC                 WT {NETC,SNFH,ET}, TC, ET, NETC, SNFH, RC
met2024       1 NETC, 2 SNFH, 3 ET, 4 RC                 WT, TC, ET, RC
ped2024       1 ET, 2 NETC, 3 CC, 4 ED                   WT {all}, TC {ET,NETC,CC}, ET, NETC, CC, ED
menrt2024     1 GTV (T1c only, truth ``*_gtv``)          GTV
============  =========================================  ======================================

The module-level names :data:`NCR`, :data:`ED`, :data:`ET`, :data:`REGIONS`, :data:`N_CLASSES`
describe the 2020/2023 glioma schemes (which share their internal classes), the default of
every function that takes a scheme.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from brats.volume.scheme import LabelClass, LabelError, LabelScheme, SchemeError

# Colours: the old glioma palette (necrotic core red, edema green, enhancing tumour yellow),
# with a cavity blue, a cyst purple and a radiotherapy target orange.
_RED, _GREEN, _YELLOW = (228, 26, 28), (44, 160, 44), (255, 215, 0)
_BLUE, _PURPLE, _ORANGE = (31, 119, 180), (148, 103, 189), (255, 127, 14)
_SOURCE_2023 = "BraTS 2023 metrics (rachitsaluja/BraTS-2023-Metrics)"
_SOURCE_2024 = "BraTS 2024 metrics (rachitsaluja/BraTS-2024-Metrics), metrics_{}.py"
_GLIOMA_DECODE: Final = (("WT", "SNFH"), ("TC", "NETC"), ("ET", "ET"))


def _glioma_2023(
    name: str, et_value: int, netc: str, snfh: str, source: str, task: str = "glioma"
) -> LabelScheme:
    return LabelScheme(
        name=name,
        classes=(
            LabelClass(netc, 1, _RED, "necrotic / non-enhancing core"),
            LabelClass(snfh, 2, _GREEN, "edema (non-enhancing FLAIR hyperintensity)"),
            LabelClass("ET", et_value, _YELLOW, "enhancing tumor"),
        ),
        regions={"WT": (netc, snfh, "ET"), "TC": (netc, "ET"), "ET": ("ET",)},
        decode=(("WT", snfh), ("TC", netc), ("ET", "ET")),
        lesion_task=task,
        source=source,
    )


def _post_treatment(name: str, regions: tuple[str, ...], task: str, source: str) -> LabelScheme:
    all_regions = {
        "WT": ("NETC", "SNFH", "ET"),
        "TC": ("NETC", "ET"),
        "ET": ("ET",),
        "NETC": ("NETC",),
        "SNFH": ("SNFH",),
        "RC": ("RC",),
    }
    return LabelScheme(
        name=name,
        classes=(
            LabelClass("NETC", 1, _RED, "non-enhancing tumor core"),
            LabelClass("SNFH", 2, _GREEN, "non-enhancing FLAIR hyperintensity"),
            LabelClass("ET", 3, _YELLOW, "enhancing tissue"),
            LabelClass("RC", 4, _BLUE, "resection cavity"),
        ),
        regions={r: all_regions[r] for r in regions},
        decode=(*_GLIOMA_DECODE, ("RC", "RC")),
        lesion_task=task,
        source=source,
    )


BRATS2020: Final = _glioma_2023(
    "brats2020", 4, "NCR", "ED", "BraTS 2020 (labels 1 NCR, 2 ED, 4 ET); regions as BraTS 2023"
)
BRATS2023: Final = _glioma_2023("brats2023", 3, "NETC", "SNFH", _SOURCE_2023)
# BraTS 2023 metastasis and pre-operative meningioma: the glioma's labels and regions, scored
# with their own lesion-wise settings (eval.py's challenge_name BraTS-MET, BraTS-MEN).
MET2023: Final = _glioma_2023(
    "met2023", 3, "NETC", "SNFH", _SOURCE_2023 + ", eval.py BraTS-MET", task="metastasis"
)
MEN2023: Final = _glioma_2023(
    "men2023", 3, "NETC", "SNFH", _SOURCE_2023 + ", eval.py BraTS-MEN", task="meningioma"
)
GLI2024: Final = _post_treatment(
    "gli2024", ("WT", "TC", "ET", "NETC", "SNFH", "RC"), "glioma", _SOURCE_2024.format("GLI")
)
MET2024: Final = _post_treatment(
    "met2024", ("WT", "TC", "ET", "RC"), "metastasis", _SOURCE_2024.format("MET")
)
PED2024: Final = LabelScheme(
    name="ped2024",
    classes=(
        LabelClass("ET", 1, _YELLOW, "enhancing tumor"),
        LabelClass("NETC", 2, _RED, "non-enhancing tumor core"),
        LabelClass("CC", 3, _PURPLE, "cystic component"),
        LabelClass("ED", 4, _GREEN, "edema"),
    ),
    regions={
        "WT": ("ET", "NETC", "CC", "ED"),
        "TC": ("ET", "NETC", "CC"),
        "ET": ("ET",),
        "NETC": ("NETC",),
        "CC": ("CC",),
        "ED": ("ED",),
    },
    decode=(("WT", "ED"), ("TC", "NETC"), ("CC", "CC"), ("ET", "ET")),
    lesion_task="paediatric",
    source=_SOURCE_2024.format("PED"),
)
MENRT2024: Final = LabelScheme(
    name="menrt2024",
    classes=(LabelClass("GTV", 1, _ORANGE, "gross tumor volume"),),
    regions={"GTV": ("GTV",)},
    decode=(("GTV", "GTV"),),
    images=("t1ce",),
    truth="gtv",
    lesion_task="meningioma_rt",
    source=_SOURCE_2024.format("MEN_RT"),
)

SCHEMES: Final[dict[str, LabelScheme]] = {
    s.name: s
    for s in (BRATS2020, BRATS2023, MET2023, MEN2023, GLI2024, MET2024, PED2024, MENRT2024)
}
"""The built-in schemes by name."""
BEFORE_2024: Final = (BRATS2020, BRATS2023, MET2023, MEN2023)
"""The built-in schemes of the BraTS 2020 and 2023 labels: a cohort in ``met2023`` or
``men2023`` read as ``brats2023`` before those schemes were built in."""
DEFAULT: Final = BRATS2023
"""What a function that takes a scheme assumes when given none (2020 has the same classes)."""

# The 2020/2023 glioma classes, for code that predates schemes.
NCR: Final = 1
ED: Final = 2
ET: Final = 3
N_CLASSES: Final = DEFAULT.n_classes
CLASS_NAMES: Final = ("background", "necrotic_core", "edema", "enhancing_tumor")
CLASS_LABELS: Final[dict[int, str]] = BRATS2020.legend()
"""Legend text of the glioma classes (:meth:`LabelScheme.legend` of ``brats2020``)."""
CLASS_COLOURS: Final[dict[int, tuple[int, int, int]]] = DEFAULT.colours()
"""The glioma overlay palette (RGB): necrotic core red, edema green, enhancing tumour yellow."""
REGIONS: Final[dict[str, tuple[int, ...]]] = {r: DEFAULT.region_classes(r) for r in DEFAULT.regions}
"""The glioma regions as sets of internal classes: WT, TC, ET."""

SchemeLike = LabelScheme | str


def hex_colour(rgb: tuple[int, int, int]) -> str:
    """``(r, g, b)`` as ``#rrggbb``."""
    return "#" + "".join(f"{c:02x}" for c in rgb)


def scheme_named(name: SchemeLike | None) -> LabelScheme:
    """The built-in scheme called ``name`` (a scheme passes through; ``None`` is the default).

    Raises:
        SchemeError: no built-in scheme has that name.
    """
    if name is None:
        return DEFAULT
    if isinstance(name, LabelScheme):
        return name
    try:
        return SCHEMES[str(name)]
    except KeyError:
        raise SchemeError(
            f"unknown label scheme {name!r}; built in: {', '.join(SCHEMES)} (or a JSON file)"
        ) from None


def scheme_from_dict(data: Mapping[str, Any]) -> LabelScheme:
    """A scheme from its JSON form (:meth:`LabelScheme.to_dict`; ``images``, ``truth``,
    ``lesion_task``, ``source`` and ``region_order`` optional).

    The regions keep ``region_order`` (JSON stored with sorted keys loses the order of
    ``regions``, and the first region ranks a report's cases), else the order of
    ``regions``; a scheme equal to the built-in of its name is that built-in, in its order.

    Raises:
        SchemeError: a missing or unknown key, or an entry the scheme cannot hold, named.
    """
    if not isinstance(data, Mapping):
        raise SchemeError("a label scheme is a JSON object")
    known = {
        "name", "classes", "regions", "region_order", "decode", "images", "truth",
        "lesion_task", "source",
    }  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise SchemeError(f"label scheme: unknown keys {unknown}; known: {sorted(known)}")
    missing = sorted({"name", "classes", "regions", "decode"} - set(data))
    if missing:
        raise SchemeError(f"label scheme: missing keys {missing}")
    try:
        classes = tuple(
            LabelClass(
                name=c["name"],
                value=c["value"],
                colour=_colour(c.get("colour", _default_colour(i))),
                text=str(c.get("text", c["name"])),
            )
            for i, c in enumerate(data["classes"])
        )
        regions = {str(k): tuple(v) for k, v in dict(data["regions"]).items()}
        order = [str(r) for r in data.get("region_order", regions)]
        if sorted(order) != sorted(regions):
            raise SchemeError(
                f"label scheme {data.get('name')!r}: region_order {order} does not list the "
                f"regions {sorted(regions)} once each"
            )
        regions = {r: regions[r] for r in order}
        decode = tuple((str(p[0]), str(p[1])) for p in data["decode"])
        extra = {k: data[k] for k in ("truth", "lesion_task", "source") if k in data}
        if "images" in data:
            extra["images"] = tuple(data["images"])
        scheme = LabelScheme(
            name=data["name"], classes=classes, regions=regions, decode=decode, **extra
        )
    except SchemeError:
        raise
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise SchemeError(f"label scheme {data.get('name')!r}: malformed entry ({exc})") from None
    built_in = SCHEMES.get(scheme.name)
    return built_in if built_in == scheme else scheme


def _colour(value: Any) -> tuple[int, int, int]:
    r, g, b = value
    return (r, g, b)


def _default_colour(i: int) -> tuple[int, int, int]:
    palette = (_RED, _GREEN, _YELLOW, _BLUE, _PURPLE, _ORANGE)
    return palette[i % len(palette)]


def scheme_from_json(text: str | bytes, what: str = "label scheme") -> LabelScheme:
    """A scheme from JSON text; :class:`SchemeError` names ``what`` on bad JSON."""
    if len(text) > 64 * 1024:
        raise SchemeError(f"{what}: over 64 KiB; a label scheme is a small JSON file")
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemeError(f"{what}: not JSON ({exc})") from None
    try:
        return scheme_from_dict(data)
    except SchemeError as exc:
        raise SchemeError(f"{what}: {exc}") from None


def _values(arr: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    if arr.dtype.kind == "f" and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))):
        raise LabelError("segmentation has non-integer or non-finite values")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise LabelError(f"label values outside 0..255: min {arr.min()}, max {arr.max()}")
    return arr.astype(np.uint8, copy=False)


def to_internal(seg: npt.ArrayLike, scheme: SchemeLike | None = None) -> npt.NDArray[np.uint8]:
    """Convert a segmentation from a scheme's on-disk values to internal classes.

    Args:
        seg: integer-valued label volume of any shape (float arrays from nibabel are accepted
            when every value is a whole number).
        scheme: the dataset's scheme (or its built-in name).

    Returns:
        ``uint8`` array of the same shape with values in ``0..len(scheme.classes)``.

    Raises:
        LabelError: a value that the scheme does not define (a "stray" label, named with the
            scheme's values), or a non-integer value.
    """
    s = scheme_named(scheme)
    arr = np.asarray(seg)
    out = s._table_in[_values(arr)]
    if np.any(out < 0):
        stray = sorted(set(np.unique(arr).astype(int).tolist()) - set(s.disk_values))
        raise LabelError(f"labels {stray} are not in the {s.name} scheme {sorted(s.disk_values)}")
    return out.astype(np.uint8)


def to_disk(labels: npt.ArrayLike, scheme: SchemeLike | None = None) -> npt.NDArray[np.uint8]:
    """Convert internal classes to a scheme's on-disk values (uint8)."""
    s = scheme_named(scheme)
    arr = np.asarray(labels)
    if arr.size and (arr.min() < 0 or arr.max() >= s.n_classes):
        raise LabelError(f"internal labels of {s.name} must be in 0..{s.n_classes - 1}")
    return np.asarray(s.disk_values, dtype=np.uint8)[arr.astype(np.intp, copy=False)]


def labels_present(seg: npt.ArrayLike) -> frozenset[int]:
    """The distinct values of a label volume (raising :class:`LabelError` on non-labels)."""
    return frozenset(int(v) for v in np.unique(_values(np.asarray(seg))))


def one_hot(labels: npt.ArrayLike, n_classes: int = N_CLASSES) -> npt.NDArray[np.float32]:
    """One-hot encode internal classes, channels last: ``(...,) -> (..., n_classes) float32``."""
    arr = np.asarray(labels)
    return np.eye(n_classes, dtype=np.float32)[arr.astype(np.intp, copy=False)]


def regions_to_labels(
    regions: npt.ArrayLike, threshold: float = 0.5, scheme: SchemeLike | None = None
) -> npt.NDArray[np.uint8]:
    """Region probabilities ``(R, D, H, W)``, in :attr:`LabelScheme.output_regions` order ->
    ``(D, H, W) uint8`` internal classes, as nnU-Net decodes regions: each output paints its
    class where it passes ``threshold``, in :attr:`LabelScheme.decode` order (for BraTS
    glioma: edema where WT, then core where TC, then ET where ET).
    """
    s = scheme_named(scheme)
    probs = np.asarray(regions)
    if probs.ndim < 1 or probs.shape[0] != len(s.decode):
        raise ValueError(
            f"expected {len(s.decode)} region channels first for {s.name}, got {probs.shape}"
        )
    out = np.zeros(probs.shape[1:], dtype=np.uint8)
    for channel, (_, cls) in enumerate(s.decode):
        out[probs[channel] > threshold] = s.class_index(cls)
    return out


def region_mask(
    labels: npt.ArrayLike, region: str, scheme: SchemeLike | None = None
) -> npt.NDArray[np.bool_]:
    """Boolean mask of one of a scheme's regions, from internal classes."""
    return np.isin(np.asarray(labels), scheme_named(scheme).region_classes(region))


def region_table(scheme: SchemeLike | None = None) -> dict[str, tuple[int, ...]]:
    """Region name -> internal classes, in report order."""
    s = scheme_named(scheme)
    return {r: s.region_classes(r) for r in s.regions}


def interchangeable(a: LabelScheme, b: LabelScheme) -> bool:
    """Whether two schemes give the same internal classes the same meaning (the same regions
    and decoding, class by class), so one's masks can be written in the other's values:
    ``brats2020``, ``brats2023``, ``met2023`` and ``men2023`` (which differ only in their
    lesion-wise settings); ``gli2024`` and ``met2024`` are not (different regions)."""
    return (
        a.n_classes == b.n_classes
        and region_table(a) == region_table(b)
        and tuple((a.region_classes(r), a.class_index(c)) for r, c in a.decode)
        == tuple((b.region_classes(r), b.class_index(c)) for r, c in b.decode)
    )
