"""The learning rate follows the run's progress, so a resized group keeps to the schedule."""

from __future__ import annotations

import itertools

import pytest

from brats.train.config import TrainConfig
from brats.train.schedule import learning_rate_at, step_progress


@pytest.mark.parametrize("schedule", ["poly", "cosine", "constant"])
def test_learning_rate_warms_up_then_decays(schedule: str) -> None:
    config = TrainConfig(
        data="d", storage="s", learning_rate=1e-3, lr_schedule=schedule, warmup_fraction=0.1,
        epochs=1,
    )  # fmt: skip
    rates = [float(learning_rate_at(config, step_progress(0, i, 100, 1))) for i in range(100)]
    assert rates[0] == pytest.approx(5e-5) and rates[9] == pytest.approx(9.5e-4)
    assert all(a < b for a, b in itertools.pairwise(rates[:10]))
    assert float(learning_rate_at(config, 0.1)) == pytest.approx(1e-3)  # the peak
    if schedule == "constant":
        assert rates[99] == pytest.approx(1e-3)
    else:
        assert 0 < rates[99] < 1e-4  # the last step still learns
        assert all(a >= b for a, b in itertools.pairwise(rates[10:]))


def test_a_group_that_halves_takes_twice_the_steps_at_the_same_rates() -> None:
    """An elastic run that lost one of 2 workers after epoch 1: epoch 2 takes 8 steps instead
    of 4, and the rates span the same stretch of the schedule as the fixed-size run's."""
    config = TrainConfig(data="d", storage="s", learning_rate=1e-3, epochs=3)

    def rates(epoch: int, steps: int) -> list[float]:
        return [
            float(learning_rate_at(config, step_progress(epoch, i, steps, config.epochs)))
            for i in range(steps)
        ]

    two, one = rates(1, 4), rates(1, 8)
    # The same stretch of the schedule, twice as dense: the same mean rate, within the
    # rates at the epoch's bounds. (A step-counted schedule would have run ahead by 4 steps.)
    assert sum(one) / 8 == pytest.approx(sum(two) / 4, rel=0.01)
    start, end = (float(learning_rate_at(config, t)) for t in (1 / 3, 2 / 3))
    assert start > one[0] > two[0] and two[-1] > one[-1] > end
