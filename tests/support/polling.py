"""Waiting in tests: poll a condition until it holds, never sleep a fixed time and hope.

A fixed sleep is either too short under load (a flaky failure) or too long everywhere (a slow suite);
a polled condition costs only what the system really takes.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from cloud.loopback import wait_until

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> T:
    """The first truthy value of ``predicate()``, polled every ``interval`` s (cloud.loopback.wait_until, which
    the demo and the benchmarks use too); a test failure, AssertionError, after ``timeout``."""
    try:
        return wait_until(predicate, timeout, what, interval)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def wait_quiet(count: Callable[[], int], quiet: float, timeout: float = 10.0, interval: float = 0.02,
               what: str = "quiet") -> int:
    """``count()`` once it has not changed for ``quiet`` s; AssertionError if it still changes at ``timeout``.

    For what must *not* happen (a report storm, a twentieth poll): the watch lasts ``quiet`` seconds after
    the last change however late it came, where a fixed sleep would stop watching at a fixed moment.
    """
    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while True:
        time.sleep(interval)
        now, value = time.monotonic(), count()
        if value != last:
            last, since = value, now
        elif now - since >= quiet:
            return value
        if now >= deadline:
            raise AssertionError(f"still changing after {timeout} s: {what} (last count {value})")
