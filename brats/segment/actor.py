"""The segmentation job's model actor: a trained model (or ensemble) over prepared rows.

Ray Data's ``map_batches`` runs :class:`CaseSegmenter` on an actor pool
(:mod:`brats.segment.job`); what it adds to each row is written by
:func:`brats.segment.writer.write_case_outputs`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from brats.errors import CaseError
from brats.ingest.rows import Row, row_to_prepared
from brats.report.records import PROBABILITIES, UNCERTAINTY
from brats.report.status import FAILED, is_done
from brats.segment.attempts import Attempts
from brats.segment.predictor import PredictSettings
from brats.segment.writer import CaseHook
from brats.storage import Location

log = logging.getLogger(__name__)


class CaseSegmenter:
    """Ray Data actor: loads the model once, segments whole cases (a batch of prepared rows,
    numpy format) through the :class:`~brats.segment.predictor.Predictor`.

    Each good row gains ``pred`` (``(D, H, W) uint8`` internal classes in the source grid),
    ``predict_s``, ``model_version``, ``precision`` and ``backend`` (what the network ran
    in), the case's uncertainty (``uncertainty``, ``agreement``, ``entropy``, ``models``: the
    :class:`~brats.segment.predictor.Assessment` of the same forward passes) and, for the
    ``maps`` asked for, ``probabilities`` (``(K, d, h, w) float16`` on the brain crop) and
    ``entropy_map`` (``(d, h, w) float16``; empty arrays when not asked for), with
    ``output_names`` (the probabilities' channels, space-separated); its image is
    emptied (the writer needs the labels, not the input again). A row whose prediction
    raises becomes a failed row, and failed rows pass through: a
    :class:`~brats.errors.CaseError` (a case the predictor refuses) keeps its message and
    its file (``error``, ``error_file``; both object columns, so no name is cut short), any
    other exception becomes ``prediction failed: <type>: <message>`` with no file. With
    ``attempts`` (the job's output folder), each case's attempts are counted
    (:class:`~brats.segment.attempts.Attempts`) and a case that already killed
    :data:`~brats.segment.attempts.MAX_ATTEMPTS` actors becomes a failed row.
    """

    def __init__(
        self,
        model_uri: str,
        s3_endpoint: str | None,
        settings: PredictSettings,
        fault_hook: CaseHook | None = None,
        attempts: Location | None = None,
        maps: tuple[str, ...] = (),
    ) -> None:
        from brats.segment.predictor import Predictor

        self.predictor = Predictor.from_artifact(model_uri, settings, s3_endpoint=s3_endpoint)
        self.fault_hook = fault_hook
        self.attempts = Attempts(attempts) if attempts is not None else None
        self.maps = maps

    def __call__(self, batch: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        n = len(batch["case_id"])
        out = dict(batch)
        out["status"] = np.array(batch["status"], dtype=object)
        out["error"] = np.array(batch["error"], dtype=object)
        out["error_file"] = np.array(batch["error_file"], dtype=object)  # any name fits
        preds = np.empty(n, dtype=object)
        images = np.empty(n, dtype=object)
        probabilities = np.empty(n, dtype=object)
        entropies = np.empty(n, dtype=object)
        sure = {key: np.full(n, np.nan) for key in ("uncertainty", "agreement", "entropy")}
        seconds = np.zeros(n)
        resampled_to = np.full(n, "", dtype=object)
        for i in range(n):
            image = batch["image"][i]
            preds[i] = np.zeros((0, 0, 0), np.uint8)
            images[i] = np.zeros((image.shape[0], 0, 0, 0), image.dtype)
            probabilities[i] = np.zeros((0, 0, 0, 0), np.float16)
            entropies[i] = np.zeros((0, 0, 0), np.float16)
            if not is_done(batch["status"][i]):
                continue
            case_id = str(batch["case_id"][i])
            refused = self._begin(case_id)
            if refused is not None:
                out["status"][i] = FAILED
                out["error"][i] = refused
                continue
            began = time.perf_counter()
            try:
                if self.fault_hook is not None:
                    self.fault_hook(case_id)
                prepared = row_to_prepared(_row(batch, i))
                preds[i], assessment = self.predictor.segment_assessed(prepared)
                if assessment.resampled_to is not None:
                    resampled_to[i] = json.dumps(list(assessment.resampled_to))
                for key in sure:
                    sure[key][i] = getattr(assessment, key)
                if PROBABILITIES in self.maps:
                    probabilities[i] = assessment.probabilities.astype(np.float16)
                if UNCERTAINTY in self.maps:
                    entropies[i] = self.predictor.entropy_map(assessment).astype(np.float16)
            except CaseError as err:  # the case cannot be used: its own message and file
                log.error("case %s: prediction refused it: %s", case_id, err)
                out["status"][i] = FAILED
                out["error"][i] = str(err)
                out["error_file"][i] = err.file or ""
                continue
            except Exception as err:  # this case fails; the actor and the others go on
                log.exception("case %s: prediction failed", case_id)
                out["status"][i] = FAILED
                out["error"][i] = f"case {case_id}: prediction failed: {type(err).__name__}: {err}"
                continue
            finally:
                self._end(case_id)
            seconds[i] = time.perf_counter() - began
        out["image"] = images
        out["pred"] = preds
        out["probabilities"] = probabilities
        out["entropy_map"] = entropies
        out.update(sure)
        out["models"] = np.full(n, self.predictor.n_models)
        out["output_names"] = np.asarray([" ".join(self.predictor.output_names)] * n)
        out["predict_s"] = seconds
        out["resampled_to"] = resampled_to
        out["model_version"] = np.asarray([self.predictor.version] * n)
        out["precision"] = np.asarray([self.predictor.precision] * n)
        out["backend"] = np.asarray([self.predictor.backend] * n)
        return out

    def _begin(self, case_id: str) -> str | None:
        """Count an attempt at ``case_id``; or why it is not tried: it killed
        :data:`~brats.segment.attempts.MAX_ATTEMPTS` actors already, or its attempts cannot
        be counted (storage failing), which fails this case and not the batch."""
        if self.attempts is None:
            return None
        try:
            if self.attempts.begin(case_id) is not None:
                return None
        except (OSError, ValueError) as err:
            log.error("case %s: its attempts cannot be counted: %s", case_id, err)
            return f"case {case_id}: its attempts cannot be counted: {type(err).__name__}: {err}"
        log.error("case %s: failed after %d attempts", case_id, self.attempts.limit)
        self._end(case_id)
        return self.attempts.exhausted_error(case_id)

    def _end(self, case_id: str) -> None:
        """Forget ``case_id``'s count; a count that cannot be removed stays (the next job
        clears every count as it starts) and fails nothing."""
        if self.attempts is None:
            return
        try:
            self.attempts.end(case_id)
        except OSError as err:
            log.warning("case %s: its attempt count stays: %s", case_id, err)


def _row(batch: dict[str, npt.NDArray[Any]], i: int) -> Row:
    return {key: values[i] for key, values in batch.items()}
