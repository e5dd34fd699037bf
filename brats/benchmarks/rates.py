"""Rates from timings: what several benchmarks compute the same way."""

from __future__ import annotations


class TooSmallToMeasure(RuntimeError):
    """The run was too short for its rate to mean anything."""


def marginal_rate(n: int, seconds_n: float, seconds_4n: float, what: str) -> tuple[float, float]:
    """The steady rate of a job timed over N and 4N items, and its fixed cost.

    A job's start-up (starting actors, loading a model, planning a Dataset) is paid once
    whatever the input's size, so the rate between the two runs, ``3N / (t(4N) - t(N))``,
    is the rate with it taken out; ``t(N) - N / rate`` is what is left: the fixed cost.

    Returns:
        ``(items per second, fixed seconds)``.

    Raises:
        TooSmallToMeasure: when 4N items took no longer than N; the difference is then all
            noise (a rate from it would be meaningless or negative).
    """
    extra = seconds_4n - seconds_n
    if extra <= 0:
        raise TooSmallToMeasure(
            f"{what}: {4 * n} items took no longer than {n} ({seconds_4n:.2f} s vs "
            f"{seconds_n:.2f} s); the items are too few or too small to measure a rate"
        )
    rate = 3 * n / extra
    return rate, seconds_n - n / rate
