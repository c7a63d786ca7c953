"""Real components the integration and end-to-end tests need (Docker, Mosquitto, PostgreSQL).

Under CI=true a missing one fails the test, so a broken CI machine cannot pass by skipping everything;
on a developer's machine it skips.
"""
from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> None:
    """A needed real component is absent: fail loudly in CI, skip on a developer's machine."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is not available")
    pytest.skip(f"{what} is not available")
