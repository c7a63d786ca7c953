"""Exponential backoff (pure): the caller supplies the random fraction, so tests choose it."""
from __future__ import annotations


def backoff_delay(attempt: int, low: float, high: float, fraction: float = 1.0) -> float:
    """Delay before retry ``attempt`` (1 = the first retry): ``low * 2**(attempt-1)`` capped at ``high``.

    ``fraction`` in [0, 1] spreads it over the upper half ("equal jitter"), so that many devices
    cut off together by a broker restart do not all come back in the same instant.
    """
    if attempt < 1 or not 0.0 <= fraction <= 1.0 or not 0.0 < low <= high:
        raise ValueError(f"backoff_delay: attempt {attempt}, low {low}, high {high}, fraction {fraction}")
    ceiling = min(high, low * 2.0 ** min(attempt - 1, 64))
    return ceiling / 2 + ceiling / 2 * fraction
