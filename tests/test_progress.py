"""Progress lines: the first case, then at most one every 30 s, and the last; failures apart."""

from __future__ import annotations

import logging

import pytest

from brats.progress import Progress, duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_for_the_first_case_then_at_most_every_30_s_and_the_last(caplog) -> None:
    clock = Clock()
    log = logging.getLogger("brats.test-progress")
    progress = Progress("segment", 10, log, clock=clock)
    with caplog.at_level(logging.INFO, logger=log.name):
        for i in range(10):
            clock.now += 7.0  # one case every 7 s: lines at cases 1, 6 (35 s later), 10
            progress.update(f"case{i}", "unreadable FLAIR" if i == 3 else None)
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert infos == [
        "segment: 1/10 cases (1 done, 0 failed), 0.14 cases/s, about 63 s left",
        "segment: 6/10 cases (5 done, 1 failed), 0.14 cases/s, about 28 s left",
        "segment: 10/10 cases (9 done, 1 failed), 0.14 cases/s, finished in 70 s",
    ]
    assert warnings == ["segment: case3 failed: unreadable FLAIR"]


@pytest.mark.parametrize(("seconds", "text"), [(42, "42 s"), (420, "7 min"), (7500, "2 h 05 min")])
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_ray_data_progress_bars_only_in_a_terminal(monkeypatch, tmp_path) -> None:
    import io
    import os
    import pty
    import sys

    from brats.runtime import progress_bars

    main, secondary = pty.openpty()
    try:
        with open(secondary, "w", closefd=False) as terminal:
            monkeypatch.setattr(sys, "stdout", terminal)
            assert progress_bars() is True
        with open(tmp_path / "job.log", "w") as log_file:
            monkeypatch.setattr(sys, "stdout", log_file)
            assert progress_bars() is False
        monkeypatch.setattr(sys, "stdout", io.StringIO())  # no file descriptor at all
        assert progress_bars() is False
    finally:
        os.close(main)
        os.close(secondary)
