"""Waiting in tests: poll a condition until it holds, never sleep a fixed time and hope.

A fixed sleep is either too short under load (a flaky failure) or too long everywhere (a slow suite);
a polled condition costs only what the system really takes.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> T:
    """The first truthy value of ``predicate()``, polled every ``interval`` s; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
