"""The interactive app: upload one case, segment it with a trained model, look through it.

``brats app --model PATH_OR_S3`` serves a Gradio page:

* **Upload** a ``.npy`` volume (``(D, H, W, C)`` channels last, as the ``seed`` preset's
  arrays are, or ``(C, D, H, W)``; ``C = 3`` is FLAIR, T1ce, T2 and ``C = 4`` is FLAIR, T1,
  T1ce, T2) or a case's NIfTI files named like BraTS (``*_flair.nii.gz`` ... or the 2023
  ``*-t2f.nii.gz`` ...). The model's ``modalities`` pick the channels it is fed; a missing
  one is an error that says which. Uploads are checked before any allocation
  (:mod:`brats.io.uploads`); a refused one gets its message and the server keeps serving.
* **Segment** through the one :class:`~brats.segment.predictor.Predictor`, with the
  segmentation job's own preparation, sliding window, TTA and postprocessing settings; the
  mask of a NIfTI upload is offered for download in the case's own geometry.
* **Inspect**: slice slider, channel, axial/coronal/sagittal view, mask overlay with a
  legend, and the region volumes in ml -- the classes, colours and regions of the model's
  label scheme (``model.json``; WT, TC, ET for BraTS glioma, GTV for meningioma radiotherapy).
  ``--label-scheme NAME`` states the scheme the uploads are in: the app refuses to start
  when the model's labels mean something else.

The model is the artifact named at startup, loaded once and hash-checked (weights only);
nothing uploaded is ever loaded as a model or executed. Volumes are ``(C, D, H, W)`` inside,
spatial axes in the NIfTI voxel order (x, y, z as BraTS stores them): an axial view fixes z,
coronal fixes y, sagittal fixes x (:mod:`brats.report.slices` draws them).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from brats.errors import CaseError
from brats.io.uploads import (
    UploadError,
    UploadLimits,
    check_nifti_upload,
    load_npy_upload,
    select_channels,
    upload_kind,
)
from brats.options import option
from brats.report.slices import VIEWS, display_volume, legend_html, render_slice
from brats.segment.predictor import PredictSettings
from brats.storage import S3_ENDPOINT_HELP
from brats.volume.labels import (
    DEFAULT,
    SCHEMES,
    LabelScheme,
    interchangeable,
    scheme_named,
)
from brats.volume.postprocess import region_volumes_ml

if TYPE_CHECKING:
    import gradio as gr

    from brats.segment.predictor import Predictor

log = logging.getLogger(__name__)

MAX_SESSIONS: Final = 8
"""Sessions whose uploaded case the server keeps (each holds a few volumes)."""
SESSION_TTL_S: Final = 3600


@dataclass(frozen=True)
class AppConfig:
    """Everything ``brats app`` takes."""

    model: str = option(help="model folder (model.keras + model.json, or an ensemble of folds)")
    host: str = option("127.0.0.1", help="address to listen on")
    port: int = option(7860, help="port to listen on")
    max_upload_mb: int = option(
        UploadLimits().max_bytes >> 20, help="largest volume accepted, as float32 (MiB)"
    )
    predict: PredictSettings = field(default_factory=PredictSettings)
    s3_endpoint: str | None = option(None, help=S3_ENDPOINT_HELP)
    label_scheme: str | None = option(
        None,
        metavar="SCHEME",
        choices=tuple(SCHEMES),
        help="the label scheme of the cases to upload (a built-in name): the app refuses to "
        "start unless the model's labels mean the same (default: the model's, unchecked)",
    )

    def __post_init__(self) -> None:
        if self.label_scheme is not None:
            scheme_named(self.label_scheme)  # SchemeError naming the built-in schemes

    @property
    def limits(self) -> UploadLimits:
        return UploadLimits(max_bytes=self.max_upload_mb << 20)


@dataclass(frozen=True)
class Segmentation:
    """A segmented upload, ready to inspect (what one app session holds).

    Attributes:
        display: ``(C, D, H, W) uint8`` grey levels of the displayed channels.
        labels: ``(D, H, W) uint8`` internal classes of ``scheme``.
        modalities: names of the ``display`` channels.
        spacing: voxel size in mm.
        volumes_ml: :func:`brats.volume.postprocess.region_volumes_ml` of ``labels``.
        source: what was uploaded (the file name, or the case id of NIfTI files).
        used: the channels the model was fed.
        mask: the mask as NIfTI bytes in the case's geometry and label scheme, the bytes
            the segmentation job writes for it; ``None`` for an array upload (no geometry).
        seconds: time to read, predict and paste back.
        scheme: the model's label scheme: what ``labels`` and ``volumes_ml`` mean.
        predicted_spacing: the model's spacing where the case was resampled to it to be
            predicted (:attr:`Assessment.resampled_to`), else ``None``.
    """

    display: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.uint8]
    modalities: tuple[str, ...]
    spacing: tuple[float, float, float]
    volumes_ml: dict[str, float]
    source: str
    used: tuple[str, ...]
    mask: bytes | None
    seconds: float
    scheme: LabelScheme = DEFAULT
    predicted_spacing: tuple[float, float, float] | None = None


def segment_upload(
    predictor: Predictor,
    paths: Sequence[str | os.PathLike[str]],
    limits: UploadLimits = UploadLimits(),
) -> Segmentation:
    """Check and read an upload, segment it with ``predictor``, prepare it for viewing.

    A ``.npy`` upload shows every channel it has and feeds the model's; NIfTI files are read
    for the model's channels only, and give a mask.

    Raises:
        UploadError: a refused upload, or channels that do not fit the model.
    """
    began = time.perf_counter()
    used = predictor.info.modalities
    scheme = predictor.info.scheme
    if upload_kind(paths) == "npy":
        upload = load_npy_upload(paths[0], limits)
        if not np.any(upload.image):
            raise UploadError(f"{upload.source}: every voxel is zero; nothing to segment")
        labels = predictor.segment_volume(select_channels(upload, used))
        image, modalities, spacing, source = (
            upload.image,
            upload.modalities,
            upload.spacing,
            upload.source,
        )
        mask, resampled = None, None
    else:
        checked = check_nifti_upload(paths, used, limits)
        try:
            done = predictor.segment_files(checked.case, checked.location, limits=checked.limits)
        except CaseError as exc:
            raise UploadError(str(exc)) from None
        labels, mask = done.labels, done.mask
        resampled = done.assessment.resampled_to
        image = np.stack([done.volumes.images[m] for m in used])
        modalities, spacing, source = used, done.volumes.spacing, checked.case.case_id
    return Segmentation(
        display=display_volume(image),
        labels=labels,
        modalities=modalities,
        spacing=spacing,
        volumes_ml=region_volumes_ml(labels, spacing, scheme),
        source=source,
        used=used,
        mask=mask,
        seconds=time.perf_counter() - began,
        scheme=scheme,
        predicted_spacing=resampled,
    )


def check_label_scheme(given: str | None, model: LabelScheme) -> LabelScheme:
    """The scheme the app shows uploads in: the model's, once ``--label-scheme`` (``given``,
    a built-in name, or ``None``: unchecked) is found to mean the same labels
    (:func:`brats.volume.labels.interchangeable`).

    Raises:
        brats.io.model_card.ArtifactError: the model's labels mean something else (naming
            both schemes).
        brats.volume.labels.SchemeError: ``given`` is no built-in scheme.
    """
    if given is None:
        return model
    wanted = scheme_named(given)
    if not interchangeable(wanted, model):
        from brats.io.model_card import ArtifactError

        raise ArtifactError(
            f"--label-scheme {wanted.name}: the model predicts label scheme {model.name}, "
            f"whose labels mean something else (regions {', '.join(model.regions)} against "
            f"{', '.join(wanted.regions)}); serve a model trained in {wanted.name}, or leave "
            "--label-scheme out to show the model's"
        )
    return model


def slice_count(segmentation: Segmentation, axis: str) -> int:
    return int(segmentation.labels.shape[VIEWS[axis]])


# --- the app ------------------------------------------------------------------------------------


def build_app(config: AppConfig) -> gr.Blocks:
    """Load the model once (hash-checked) and lay out the page around it.

    Raises:
        brats.io.model_card.ArtifactError: the model is missing or not what its json says,
            or its label scheme is not ``config.label_scheme`` (:func:`check_label_scheme`).
    """
    import gradio as gr

    from brats.segment.predictor import Predictor

    predictor = Predictor.from_artifact(
        config.model, config.predict, s3_endpoint=config.s3_endpoint
    )
    scheme = check_label_scheme(config.label_scheme, predictor.info.scheme)
    handlers = _Handlers(predictor, config.limits, tempfile.mkdtemp(prefix="brats-app-masks-"))
    with gr.Blocks(
        title="brats: tumor segmentation",
        analytics_enabled=False,
        delete_cache=(1800, SESSION_TTL_S),
    ) as app:
        gr.Markdown(_introduction(predictor))
        _wire(handlers, _layout(scheme))
    return app


class _Handlers:
    """What the page's events call: segment an upload, draw a slice, change the view."""

    def __init__(self, predictor: Predictor, limits: UploadLimits, downloads: str) -> None:
        self.predictor = predictor
        self.limits = limits
        self.downloads = downloads

    def segment(
        self, files: list[str] | None, axis: str
    ) -> tuple[Segmentation, npt.NDArray[np.uint8], dict[str, float], str, Any, Any, Any]:
        """Segment an upload; the state, first picture, volumes, status, slider, channel
        choice and mask file. A refused upload is a message in the page, not a crash."""
        import gradio as gr

        try:
            result = segment_upload(self.predictor, list(files or []), self.limits)
        except UploadError as exc:
            log.info("refused upload: %s", exc)
            raise gr.Error(str(exc), title="Upload refused", print_exception=False) from None
        n = slice_count(result, axis)
        d, h, w = result.labels.shape
        status = (
            f"{result.source}: {len(result.modalities)} channels ({', '.join(result.modalities)}), "
            f"grid {d}x{h}x{w}, spacing {_spacing(result.spacing)} mm; model "
            f"{self.predictor.version[:12]} fed {', '.join(result.used)}"
            + (
                f", predicted at its {_spacing(result.predicted_spacing)} mm"
                if result.predicted_spacing
                else ""
            )
            + f"; {result.seconds:.1f} s"
        )
        return (
            result,
            render_slice(
                result.display, result.labels, 0, axis, n // 2, True, scheme=result.scheme
            ),
            {k: round(v, 3) for k, v in result.volumes_ml.items()},
            status,
            gr.Slider(minimum=0, maximum=n - 1, value=n // 2, step=1),
            gr.Dropdown(choices=list(result.modalities), value=result.modalities[0]),
            _mask_file(self.downloads, result),
        )

    @staticmethod
    def render(
        state: Segmentation | None, channel: str | None, axis: str, index: float, show: bool
    ) -> npt.NDArray[np.uint8] | None:
        """The slice ``index`` along ``axis`` of ``channel``, with or without the mask."""
        if state is None:
            return None
        c = state.modalities.index(channel) if channel in state.modalities else 0
        return render_slice(
            state.display, state.labels, c, axis, int(index), bool(show), scheme=state.scheme
        )

    @staticmethod
    def change_axis(state: Segmentation | None, axis: str) -> Any:
        """The slice slider for ``axis``, at its middle slice."""
        import gradio as gr

        if state is None:
            return gr.Slider()
        n = slice_count(state, axis)
        return gr.Slider(minimum=0, maximum=n - 1, value=n // 2, step=1)


def _introduction(predictor: Predictor) -> str:
    """The page's heading: what the model takes and what to upload."""
    info = predictor.info
    scheme = info.scheme
    return (
        "## Brain tumor segmentation\n"
        f"Model `{predictor.version[:12]}` ({predictor.backend}, {predictor.precision}) takes "
        f"{len(info.modalities)} channels: "
        f"**{', '.join(info.modalities)}** ({info.normalization} normalization, "
        f"{info.patch_size} windows) and segments in label scheme `{scheme.name}` "
        f"(regions {', '.join(scheme.regions)}). Upload a `.npy` volume -- `(D, H, W, C)` or "
        "`(C, D, H, W)`, "
        "C = 3 (FLAIR, T1ce, T2) or 4 (FLAIR, T1, T1ce, T2) -- or one case's NIfTI files named "
        "like BraTS (`<case>_flair.nii.gz`, `_t1`, `_t1ce`, `_t2`, or `<case>-t2f.nii.gz`, "
        "`-t1n`, `-t1c`, `-t2w`)."
    )


def _layout(scheme: LabelScheme = DEFAULT) -> dict[str, Any]:
    """The page's components, by name, laid out in the current ``gr.Blocks``, for a model
    of ``scheme``."""
    import gradio as gr

    w: dict[str, Any] = {"state": gr.State(None, time_to_live=SESSION_TTL_S)}
    with gr.Row():
        with gr.Column(scale=1):
            w["files"] = gr.File(
                label="Volume (.npy) or NIfTI files",
                file_count="multiple",
                file_types=[".npy", ".nii", ".nii.gz"],
            )
            w["run"] = gr.Button("Segment", variant="primary")
            w["status"] = gr.Textbox(label="Status", interactive=False, lines=2)
            w["volumes"] = gr.JSON(label=f"Region volumes (ml): {', '.join(scheme.regions)}")
            w["mask"] = gr.File(
                label="Mask (NIfTI uploads: in the case's geometry)", interactive=False
            )
        with gr.Column(scale=2):
            w["picture"] = gr.Image(label="Slice", type="numpy", format="png", interactive=False)
            gr.HTML(legend_html(scheme))
            w["index"] = gr.Slider(0, 1, value=0, step=1, label="Slice")
            with gr.Row():
                w["channel"] = gr.Dropdown(choices=[], label="Channel", interactive=True)
                w["axis"] = gr.Radio(list(VIEWS), value="axial", label="View")
                w["show"] = gr.Checkbox(value=True, label="Show mask")
    return w


def _wire(handlers: _Handlers, w: dict[str, Any]) -> None:
    """Connect the components' events to the handlers (``segment`` and ``render`` are the
    page's public API)."""
    view = [w["state"], w["channel"], w["axis"], w["index"], w["show"]]
    outputs = ["state", "picture", "volumes", "status", "index", "channel", "mask"]
    w["run"].click(
        handlers.segment, [w["files"], w["axis"]], [w[k] for k in outputs], api_name="segment"
    )
    picture = w["picture"]
    w["index"].change(handlers.render, view, picture, api_name="render", trigger_mode="always_last")
    w["channel"].change(handlers.render, view, picture, api_visibility="private")
    w["show"].change(handlers.render, view, picture, api_visibility="private")
    w["axis"].change(
        handlers.change_axis, [w["state"], w["axis"]], w["index"], api_visibility="private"
    ).then(handlers.render, view, picture, api_visibility="private")


def _mask_file(folder: str, result: Segmentation) -> str | None:
    """Write a NIfTI upload's mask under ``folder`` for download (dropping masks older than a
    session); its path, or ``None`` for an array upload."""
    now = time.time()
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if now - os.path.getmtime(path) > SESSION_TTL_S:
            os.unlink(path)
    if result.mask is None:
        return None
    path = os.path.join(folder, f"{uuid.uuid4().hex[:8]}-{result.source}_seg.nii.gz")
    with open(path, "wb") as fh:
        fh.write(result.mask)
    return path


def serve(
    app: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    limits: UploadLimits = UploadLimits(),
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> None:
    """Launch ``app``; uploads over the byte limit (plus a header's room) are refused by the
    server before they are stored."""
    app.launch(
        server_name=host,
        server_port=port,
        max_file_size=limits.max_bytes + (1 << 20),
        state_session_capacity=MAX_SESSIONS,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        share=False,
        ssr_mode=False,
    )


def _spacing(spacing: Sequence[float]) -> str:
    return " x ".join(f"{s:g}" for s in spacing)
