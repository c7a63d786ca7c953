"""Capped exponential backoff with "equal jitter", as pure functions: the caller supplies the random fraction.

One formula for every retry in the agent and the cloud (MQTT reconnects, polls, reports, shadow reads,
reconciler retries, actor restarts):

    ceiling = min(high, low * 2**(attempt - 1))          the capped doubling
    delay   = ceiling * (1 - jitter * (1 - fraction))    fraction in [0, 1], usually random.random()

so the delay lies in ``[ceiling * (1 - jitter), ceiling]``. Why this jitter style (the three compared in
AWS's "Exponential Backoff And Jitter"): with *full* jitter (``jitter=1``) a retry may come almost at once,
so a fleet cut off together by a broker restart keeps a share of devices hammering it at every round;
jitter *around* the ceiling (the old ``base * (1 ± 10%)``) lets a delay exceed the configured maximum.
*Equal* jitter (``jitter=0.5``, the default) keeps a floor that still doubles, spreads the herd over half of
each round, and never waits longer than the ceiling, so a configured maximum or interval is an upper bound.
``fraction=1.0`` gives the ceiling itself: retries with no herd to spread (a local engine, a child actor)
pass it and stay exactly predictable. Determinism given ``fraction`` is what makes all of this testable.
"""
from __future__ import annotations

EQUAL_JITTER = 0.5  # the share of the ceiling that is random
_MAX_DOUBLINGS = 64  # 2**64 times any positive low exceeds every sensible cap; bounds the float arithmetic


def backoff_ceiling(attempt: int, low: float, high: float) -> float:
    """The longest wait before retry ``attempt`` (1 = the first retry): ``low`` doubled per attempt, capped at
    ``high``."""
    if attempt < 1 or not 0.0 <= low or not 0.0 <= high:
        raise ValueError(f"backoff: attempt {attempt} must be >= 1, low {low} and high {high} >= 0")
    return min(high, low * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS))


def jittered(ceiling: float, fraction: float, jitter: float = EQUAL_JITTER) -> float:
    """``ceiling`` less a random share: ``fraction`` in [0, 1] picks the point in
    ``[ceiling * (1 - jitter), ceiling]``."""
    if not 0.0 <= fraction <= 1.0 or not 0.0 <= jitter <= 1.0 or not 0.0 <= ceiling:
        raise ValueError(f"backoff: fraction {fraction} and jitter {jitter} must be in [0, 1], ceiling {ceiling} >= 0")
    return ceiling * (1.0 - jitter * (1.0 - fraction))


def backoff_delay(attempt: int, low: float, high: float, fraction: float = 1.0, jitter: float = EQUAL_JITTER) -> float:
    """Seconds to wait before retry ``attempt``: the capped doubling, jittered (see the module docstring)."""
    return jittered(backoff_ceiling(attempt, low, high), fraction, jitter)
