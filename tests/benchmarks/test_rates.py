"""Figures the benchmarks derive from their timings."""

from __future__ import annotations

import pytest

from brats.benchmarks.rates import TooSmallToMeasure, marginal_rate


def test_marginal_rate_takes_out_the_fixed_cost() -> None:
    # A job with 7 s of start-up and 2.5 items/s: t(N) = 7 + N / 2.5.
    n = 10
    rate, fixed = marginal_rate(n, 7 + n / 2.5, 7 + 4 * n / 2.5, "job")
    assert rate == pytest.approx(2.5)
    assert fixed == pytest.approx(7.0)


@pytest.mark.parametrize("seconds_4n", [3.0, 2.0])
def test_marginal_rate_refuses_a_run_too_short_to_measure(seconds_4n: float) -> None:
    with pytest.raises(TooSmallToMeasure, match="16 items took no longer than 4"):
        marginal_rate(4, 3.0, seconds_4n, "segment")
