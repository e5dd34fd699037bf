"""One set of status words (brats.report.status): the old "ok" reads as done."""

from __future__ import annotations

import numpy as np
import pytest

from brats.report.records import CaseRecord, RecordError
from brats.report.status import DONE, FAILED, OLD_DONE, is_done, read_status


def test_the_words():
    assert (DONE, FAILED, OLD_DONE) == ("done", "failed", "ok")


@pytest.mark.parametrize("word", ["done", "ok", np.str_("ok"), np.array(["done"], object)[0]])
def test_done_in_either_word(word):
    assert is_done(word) and read_status(word) == DONE


@pytest.mark.parametrize("word", ["failed", "", "OK", "Done"])
def test_anything_else_is_not_done_and_reads_unchanged(word):
    assert not is_done(word) and read_status(word) == word


def test_records_write_only_the_current_words():
    base = {"case_id": "a", "model_version": "v", "settings": {}}
    assert CaseRecord.from_dict({**base, "status": DONE}).done
    with pytest.raises(RecordError, match="not done/failed"):
        CaseRecord.from_dict({**base, "status": OLD_DONE})  # records never said "ok"
