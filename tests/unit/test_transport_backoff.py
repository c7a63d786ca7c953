"""The one backoff (messages.transport.backoff): bounds, growth, jitter range, determinism given the fraction."""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messages.transport.backoff import EQUAL_JITTER, backoff_ceiling, backoff_delay, jittered

attempts = st.integers(1, 10_000)
seconds = st.floats(0.001, 1e6)
fractions = st.floats(0.0, 1.0)
jitters = st.floats(0.0, 1.0)


def test_doubles_from_low_to_high_and_equal_jitter_keeps_the_upper_half():
    assert [backoff_delay(n, 1.0, 10.0) for n in (1, 2, 3, 4, 5, 500)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_delay(4, 1.0, 10.0, fraction=0.0) == 4.0
    assert backoff_delay(4, 1.0, 10.0, fraction=0.5) == 6.0
    assert backoff_delay(4, 1.0, 10.0, fraction=0.0, jitter=1.0) == 0.0  # full jitter, if a caller asks
    assert EQUAL_JITTER == 0.5


@pytest.mark.parametrize("args", [(0, 1.0, 2.0, 1.0), (1, -1.0, 2.0, 1.0), (1, 1.0, -2.0, 1.0), (1, 1.0, 2.0, 1.5),
                                  (1, 1.0, 2.0, -0.1), (1, math.nan, 2.0, 1.0), (1, 1.0, 2.0, math.nan)])
def test_out_of_range_arguments_raise_value_error(args):
    with pytest.raises(ValueError):
        backoff_delay(*args)


@given(attempts, seconds, seconds, fractions, jitters)
def test_the_delay_lies_in_the_jitter_band_under_the_ceiling(attempt, low, high, fraction, jitter):
    ceiling = backoff_ceiling(attempt, low, high)
    delay = backoff_delay(attempt, low, high, fraction, jitter)
    assert ceiling * (1 - jitter) * (1 - 1e-12) <= delay <= ceiling
    assert ceiling <= high and (ceiling >= min(low, high))


@given(attempts, seconds, seconds, fractions, jitters)
def test_the_delay_never_shrinks_from_one_attempt_to_the_next_at_the_same_fraction(attempt, low, high, fraction,
                                                                                    jitter):
    later = backoff_delay(attempt + 1, low, high, fraction, jitter)
    assert later >= backoff_delay(attempt, low, high, fraction, jitter)


@given(attempts, seconds, seconds, fractions)
def test_the_ceiling_is_the_capped_doubling(attempt, low, high, fraction):
    assert backoff_ceiling(attempt, low, high) == min(high, low * 2.0 ** min(attempt - 1, 64))
    assert backoff_delay(attempt, low, high) == backoff_ceiling(attempt, low, high)  # fraction 1: no jitter


@given(attempts, seconds, seconds, fractions, jitters)
def test_deterministic_given_the_fraction_and_monotonic_in_it(attempt, low, high, fraction, jitter):
    assert backoff_delay(attempt, low, high, fraction, jitter) == backoff_delay(attempt, low, high, fraction, jitter)
    assert jittered(10.0, fraction, jitter) <= jittered(10.0, min(1.0, fraction + 0.1), jitter)
