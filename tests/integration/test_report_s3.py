"""The report written to a real S3 endpoint (moto's server)."""

from __future__ import annotations

import json

from brats.report.tables import summarize
from brats.report.write import REPORT_FILES, write_report
from brats.storage import resolve
from tests.helpers import report_cohort, s3fs_client, tiny_volumes


def test_report_over_s3(s3_bucket, s3_endpoint):
    out = resolve(f"{s3_bucket}/runs/r1", s3_endpoint=s3_endpoint)
    written = write_report(report_cohort(), out, overlay=lambda case_id: tiny_volumes(2))
    assert written == {name: f"{s3_bucket}/runs/r1/{name}" for name in REPORT_FILES}
    fs = s3fs_client(s3_endpoint)
    bucket = s3_bucket.removeprefix("s3://")
    assert sorted(fs.ls(f"{bucket}/runs/r1")) == sorted(
        f"{bucket}/runs/r1/{n}" for n in REPORT_FILES
    )
    summary = json.loads(fs.cat_file(f"{bucket}/runs/r1/summary.json"))
    assert summary == summarize(report_cohort())
    page = fs.cat_file(f"{bucket}/runs/r1/report.html").decode()
    assert page.count("<img") == 4 + 5
