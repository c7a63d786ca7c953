"""The fault suite's quick mode (issue 14): real agent processes, a real broker, the reference cloud and a private
Docker engine, with faults injected from outside. The long mode is `python3 -m bench.faults` (never in CI).

Each test prints its figures (`pytest -s` shows them) and fails on any promise it saw broken.
"""
from __future__ import annotations

import json
import os
import random
import shutil

import pytest

from tests.faults import scenarios
from tests.faults.harness import Rig
from tests.support.services import missing

SEED = int(os.environ.get("FLEETLET_FAULT_SEED", "14"))


@pytest.fixture
def rig(request, tmp_path):
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("mosquitto") is None:
        missing("root, dockerd and mosquitto for a private engine and broker")
    with Rig(tmp_path, **getattr(request, "param", {})) as device:  # parametrized indirectly: Rig's options
        yield device


def report(name: str, figures: dict) -> None:
    print(f"\n[faults] {name} (seed {SEED}): {json.dumps(figures)}")
    assert figures["failures"] == [], figures["failures"]


def test_random_actor_kills_below_the_intensity_limit_restart_nobody_else(rig):
    report("actor kills", scenarios.actor_kills(rig, 20, random.Random(SEED)))


def test_an_actor_killed_past_its_limit_cools_down_alone(rig):
    report("actor over limit", scenarios.actor_over_limit(rig, random.Random(SEED)))


def test_broker_restarts_while_desired_changes_report_only_desired_values(rig):
    report("broker restarts", scenarios.broker_restarts(rig, 5, random.Random(SEED)))


@pytest.mark.parametrize("rig", [scenarios.RIG_OPTIONS["agent_kills"]], indirect=True, ids=["slow-apply"])
def test_agent_killed_mid_apply_and_at_start_always_restarts_and_converges(rig):
    report("agent kills", scenarios.agent_kills(rig, 5, 3, random.Random(SEED)))


def test_engine_outage_during_an_update_converges_soon_after_it_returns(rig):
    report("engine outage", scenarios.engine_outage(rig, 12.0, random.Random(SEED)))


@pytest.mark.parametrize("rig", [scenarios.RIG_OPTIONS["hostile_input"]], indirect=True, ids=["quick-retries"])
def test_hostile_mqtt_and_garbage_http_crash_nothing_and_touch_nothing(rig):
    report("hostile input", scenarios.hostile_input(rig, 2000, random.Random(SEED)))
