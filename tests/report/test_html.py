"""The report's HTML page (brats.report.html): escaping, counts, plots, thumbnails."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from brats.report.html import axial_slice_with_most_tumor
from brats.report.write import REPORT_FILES, write_report
from brats.storage import resolve
from tests.helpers import (
    VERSION_A,
    VERSION_B,
    done_record,
    failed_record,
    report_cohort,
    report_metrics,
    tiny_volumes,
)


def html_of(written: dict[str, str]) -> str:
    with open(written["report.html"], encoding="utf-8") as fh:
        return fh.read()


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_html_escapes_hostile_text(tmp_path):
    records = [
        done_record("dim", report_metrics(0.3)),
        done_record("fine", report_metrics(0.8)),
        failed_record(
            "case_x", '<img src=x onerror="alert(1)">', "<script>alert('reason')</script>"
        ),
    ]

    def overlay(case_id: str):
        return tiny_volumes(4)

    page = html_of(write_report(records, resolve(str(tmp_path)), overlay=overlay))
    assert "<script" not in page
    assert "onerror=" not in page.replace("onerror=&quot;", "")
    assert "&lt;script&gt;alert(&#x27;reason&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert page.count("<img") == 4 + 2  # whole-volume and lesion-wise box plots, two thumbnails


def test_html_title_counts_and_versions(tmp_path):
    page = html_of(write_report(report_cohort(), resolve(str(tmp_path))))
    title = "7 cases, 6 done, 1 failed, 5 with ground truth"
    assert re.search(f"<title>[^<]*{title}</title>", page)
    assert f"<code>{VERSION_A}</code>" in page and f"<code>{VERSION_B}</code>" in page
    assert "Records from 2 model versions" in page
    assert "Dice 1 and HD95 0" in page
    assert page.count('<tr class="failed">') == 1
    assert page.count("<img") == 4  # box plots only: no overlay loader


def test_thumbnails_of_worst_and_best_cases(tmp_path):
    calls: list[str] = []

    def overlay(case_id: str):
        calls.append(case_id)
        return tiny_volumes(5)

    page = html_of(
        write_report(report_cohort(), resolve(str(tmp_path)), overlay=overlay, n_thumbnails=2)
    )
    # by dice_WT: a 0.42, b 0.63, c 0.77, d 0.85, e 0.91; the no-ground-truth case never shows
    assert calls == ["case_a", "case_b", "case_e", "case_d"]
    assert page.count("<img") == 4 + 4
    assert page.count("axial slice 5</figcaption>") == 4
    assert "necrotic / non-enhancing core (1)" in page and "enhancing tumor (3)" in page

    thumbnail = imread(io.BytesIO(embedded_pngs(page)[4]))[..., :3]  # after the 4 box plots
    r, g, b = (thumbnail[..., i].astype(float) for i in range(3))
    assert np.any(r - g > 0.3), "no necrotic core in red"
    assert np.any(g - r > 0.15), "no edema in green"
    assert np.any((r - b > 0.3) & (g - b > 0.3)), "no enhancing tumour in yellow"
    assert np.any((b - r > 0.5) & (g - r > 0.5)), "no cyan ground-truth outline"


def test_overlay_failure_leaves_a_note(tmp_path):
    def overlay(case_id: str):
        if case_id == "case_a":
            raise FileNotFoundError("s3://user:hunter2@bucket/case_a.nii.gz?X-Amz-Signature=abc")
        if case_id == "case_e":
            image, pred, truth = tiny_volumes(5)
            return image, pred[:, :, :4], truth  # a shape the report must refuse
        return tiny_volumes(5)

    written = write_report(report_cohort(), resolve(str(tmp_path)), overlay=overlay, n_thumbnails=2)
    assert sorted(written) == sorted(REPORT_FILES)
    page = html_of(written)
    assert page.count("<img") == 4 + 2
    assert "No thumbnail: FileNotFoundError: s3://bucket/case_a.nii.gz" in page
    assert "hunter2" not in page and "Signature" not in page
    assert "No thumbnail: ValueError: image (16, 16, 8) and prediction (16, 16, 4)" in page


def test_no_ground_truth_skips_plots_and_thumbnails(tmp_path):
    def overlay(case_id: str):
        raise AssertionError("no case has metrics: overlay must not be called")

    records = [done_record("p", None), done_record("q", None), failed_record("r", None, "no FLAIR")]
    page = html_of(write_report(records, resolve(str(tmp_path)), overlay=overlay))
    assert "<img" not in page
    assert "No case has ground truth" in page
    assert "Worst and best" not in page


def test_axial_slice_with_most_tumor():
    _, pred, truth = tiny_volumes(6)
    assert axial_slice_with_most_tumor(pred, truth) == 6
    empty = np.zeros_like(pred)
    assert axial_slice_with_most_tumor(empty, truth) == 0  # truth fills every slice: first
    truth[:, :, 3] = 1
    assert axial_slice_with_most_tumor(empty, truth) == 3
    assert axial_slice_with_most_tumor(empty, None) == 4


def test_a_negative_thumbnail_count_is_refused(tmp_path):
    with pytest.raises(ValueError, match="n_thumbnails"):
        write_report([], resolve(str(tmp_path)), n_thumbnails=-1)
    assert not list(tmp_path.iterdir())


def test_imports_neither_ray_nor_tensorflow():
    code = (
        "import sys, brats.report.tables, brats.report.html\n"
        "loaded = {'ray', 'tensorflow', 'keras', 'matplotlib.pyplot'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
