"""The report's HTML page (brats.report.html): escaping, counts, plots, thumbnails."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from matplotlib.image import imread

from brats.report.figures import axial_slice_with_most_tumor, label_rgba, overlay_png
from brats.report.write import REPORT_FILES, write_report
from brats.storage import resolve
from brats.volume.labels import DEFAULT, GLI2024, MENRT2024, PED2024, hex_colour
from tests.helpers import (
    VERSION_A,
    VERSION_B,
    done_record,
    failed_record,
    report_cohort,
    report_metrics,
    tiny_volumes,
)
from tests.report.scheme_records import scheme_record


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


def many_records(n: int, failed_every: int) -> list:
    """``n`` records, seeded Dice WT, every ``failed_every``-th one failed."""
    rng = np.random.default_rng(7)
    records = []
    for i in range(n):
        case_id = f"case{i:04d}"
        if i % failed_every == failed_every - 1:
            records.append(failed_record(case_id, f"{case_id}_t1.nii.gz", "truncated gzip"))
        else:
            records.append(done_record(case_id, report_metrics(float(rng.uniform(0.2, 1.0)))))
    return records


def case_rows(page: str) -> list[str]:
    """The case ids in the page's case table, in order."""
    table = page.split("<h2>Cases</h2>", 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr(?: class="failed")?><td class="text">([^<]+)</td>', table)


def test_the_case_table_is_bounded_and_names_every_failed_case(tmp_path):
    from brats.report.html import MAX_CASE_ROWS

    records = many_records(300, failed_every=25)
    page = html_of(write_report(records, resolve(str(tmp_path))))
    shown = case_rows(page)
    assert len(shown) == MAX_CASE_ROWS == 100
    failed = sorted(r.case_id for r in records if not r.done)
    assert len(failed) == 12 and shown[:12] == failed
    assert page.count('<tr class="failed">') == 12
    dice = {r.case_id: r.metrics["dice_WT"] for r in records if r.done}
    assert shown[12:] == sorted(dice, key=lambda c: (dice[c], c))[:88]  # the lowest Dice WT
    assert '<a href="report.csv">report.csv</a>' in page
    assert "100 of 300 cases" in page and "not in this table" not in page


def test_failed_cases_beyond_the_bound_are_counted_and_pointed_to(tmp_path):
    records = many_records(300, failed_every=2)  # 150 failed: more than the table holds
    page = html_of(write_report(records, resolve(str(tmp_path))))
    shown = case_rows(page)
    assert shown == sorted(r.case_id for r in records if not r.done)[:100]
    assert "150 cases failed; 50 of them are not in this table" in page


def test_a_small_cohort_shows_every_case_in_case_id_order(tmp_path):
    page = html_of(write_report(report_cohort(), resolve(str(tmp_path))))
    assert case_rows(page) == sorted(r.case_id for r in report_cohort())
    assert "All 7 cases, by case id" in page and 'href="report.csv"' in page


def test_the_page_does_not_grow_with_the_cohort(tmp_path):
    """Ten times the cases, the same text (the box plots are pictures of a fixed size)."""
    small = write_report(many_records(150, 5), resolve(str(tmp_path / "small")))  # 30 failed
    large = write_report(many_records(1500, 50), resolve(str(tmp_path / "large")))  # 30 failed
    pictures = re.compile(r'src="data:image/png;base64,[^"]+"')
    sizes = [len(pictures.sub("", html_of(w))) for w in (small, large)]
    assert sizes[1] < 1.05 * sizes[0], sizes


# --- label schemes ---------------------------------------------------------------------


def test_a_gli2024_page_shows_the_resection_cavity(tmp_path):
    records = [scheme_record(f"g{i}", GLI2024, dice) for i, dice in enumerate((0.9, 0.4, 0.6))]

    def overlay(case_id: str):
        image, pred, _ = tiny_volumes(5)
        pred[2:4, 2:6, 5] = 4  # resection cavity beside the tumour
        return image, pred, None

    page = html_of(write_report(records, resolve(str(tmp_path)), overlay=overlay, scheme=GLI2024))
    assert "Label scheme: <code>gli2024</code>" in page
    assert "WT = NETC + SNFH + ET, TC = NETC + ET, ET, NETC, SNFH, RC" in page
    assert "Records in label scheme" not in page
    for text in ("Dice RC</td>", "lesion-wise Dice RC</td>", "<th>lesion Dice RC</th>"):
        assert text in page, text
    detection = page.split("<h2>Lesion detection</h2>", 1)[1].split("</table>", 1)[0]
    assert '<td class="text">RC</td><td>3</td><td>0</td><td>0</td>' in detection
    rc = hex_colour(GLI2024.classes[3].colour)
    assert f'background:{rc}"></span>resection cavity (4)' in page
    assert "ground-truth labelled (any class) outline" in page  # RC is outside WT
    assert page.count("axial slice 5</figcaption>") == 3
    thumbnail = imread(io.BytesIO(embedded_pngs(page)[4]))[..., :3]
    r, g, b = (thumbnail[..., i].astype(float) for i in range(3))
    assert np.any((b - r > 0.2) & (b > g)), "no resection cavity in blue"


def test_records_of_another_scheme_are_pointed_out(tmp_path):
    # brats2020 records read as brats2023 (the same labels): nothing to say
    page = html_of(write_report(report_cohort(), resolve(str(tmp_path / "a"))))
    assert "Label scheme: <code>brats2023</code>; regions WT = NETC + SNFH + ET" in page
    assert "Records in label scheme" not in page
    page = html_of(write_report(report_cohort(), resolve(str(tmp_path / "b")), scheme=PED2024))
    assert "Records in label scheme <code>brats2020</code>" in page


def test_a_menrt2024_page_ranks_by_gtv(tmp_path):
    records = [scheme_record(f"m{i}", MENRT2024, dice) for i, dice in enumerate((0.9, 0.4))]

    def overlay(case_id: str):
        image, pred, truth = tiny_volumes(3)
        return image, np.minimum(pred, 1), truth.clip(0, 1)

    page = html_of(write_report(records, resolve(str(tmp_path)), overlay=overlay, scheme=MENRT2024))
    assert "Worst and best cases by Dice GTV" in page and "m1: Dice GTV 0.400" in page
    assert "gross tumor volume (1)" in page and "ground-truth GTV outline" in page
    assert "lesion-wise, BraTS meningioma radiotherapy settings" in page
    assert "Dice WT" not in page


def test_the_overlay_paints_every_class_of_the_scheme():
    from matplotlib.colors import to_rgba

    labels = np.array([[0, 3, 4]], dtype=np.uint8)
    rgba = label_rgba(labels, PED2024)
    assert rgba[0, 0, 3] == 0.0  # background stays clear
    cc = hex_colour(PED2024.colours()[PED2024.class_index("CC")])
    assert tuple(rgba[0, 1]) == to_rgba(cc, alpha=0.5)  # class 3 of ped2024 is CC, purple
    assert tuple(rgba[0, 2]) == to_rgba(hex_colour(PED2024.colours()[4]), alpha=0.5)
    glioma_et = to_rgba(hex_colour(DEFAULT.colours()[3]), alpha=0.5)
    assert tuple(label_rgba(labels[:, :2])[0, 1]) == glioma_et != to_rgba(cc, alpha=0.5)
    image, pred, truth = tiny_volumes(2)
    pred[pred == 3] = 4
    overlay_png(image, pred, truth, PED2024)  # ped2024 has a class 4
    with pytest.raises(ValueError, match=r"labels outside 0\.\.3"):
        overlay_png(image, pred, truth)


def test_the_most_uncertain_cases_come_first_with_their_pictures(tmp_path):
    scores = {"case_e": 0.2, "case_a": 0.9, "case_nogt": 1.3}
    records = [
        replace(r, uncertainty={"score": scores[r.case_id], "agreement": 0.5, "entropy": 0.1,
                                "models": 3})
        if r.case_id in scores else r
        for r in report_cohort()
    ]  # fmt: skip
    calls: list[str] = []

    def overlay(case_id: str):
        calls.append(case_id)
        return tiny_volumes(5)

    page = html_of(write_report(records, resolve(str(tmp_path)), overlay=overlay, n_thumbnails=1))
    assert "Review first: the 3 most uncertain cases" in page
    review = page[page.index("Review first") : page.index("</table>", page.index("Review first"))]
    assert [review.index(c) for c in ("case_nogt", "case_a", "case_e")] == sorted(
        review.index(c) for c in ("case_nogt", "case_a", "case_e")
    )
    assert review.count("<img") == 3 and "axial slice 5" in review
    assert sorted(calls) == ["case_a", "case_e", "case_nogt"]  # worst/best a and e: drawn once
    plain = html_of(write_report(report_cohort(), resolve(str(tmp_path / "plain"))))
    assert "Review first" not in plain  # records without uncertainty
