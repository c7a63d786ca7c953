"""The persistence actor in a running actor system: it stores, announces, and re-announces after a crash."""
from __future__ import annotations

import os
import signal

import pytest

import messages
from actors.runtime.system import AgentStartError, AgentSystem
from messages.bus.outbox import EnqueueReport, RecordError
from messages.bus.target import TargetStateFetched
from store import Store
from tests.integration.test_supervision import agent_config, children
from tests.support.polling import wait_for
from tests.support.probe_actors import recorded_rows


@pytest.fixture
def system(tmp_path, port, start_agent):
    actors = {
        "persistence": {"class": "actors.persistence.Persistence",
                        "subscribes": ["TargetStateFetched", "EnqueueReport", "AckReport", "RecordError"]},
        "recorder": {"class": "tests.support.probe_actors.Recorder",
                     "subscribes": ["TargetStateStored", "ReportQueued"],
                     "settings": {"path": str(tmp_path / "recorded.jsonl")}},
    }
    return start_agent(agent_config(tmp_path, port, actors))


def seen(tmp_path, kind):
    rows = recorded_rows(tmp_path / "recorded.jsonl")
    return [row for row in rows if row["type"] == kind]


def test_stores_then_announces_and_reannounces_after_a_kill(system, tmp_path):
    tell = lambda msg: system.asys.tell(system.supervisor, messages.encode(msg))  # noqa: E731
    tell(TargetStateFetched({"apps": {}}, '"etag-1"', 100.0))
    tell(EnqueueReport("device-state", {"a": 1}))
    tell(EnqueueReport("device-state", {"b": {"c": 2}}))
    tell(RecordError("shadow", "mode", "cannot apply 'turbo'", 5.0))
    wait_for(lambda: seen(tmp_path, "TargetStateStored") and len(seen(tmp_path, "ReportQueued")) == 2,
             what="announcements")
    assert seen(tmp_path, "ReportQueued")[-1]["patch"] == {"a": 1, "b": {"c": 2}}

    pid = children(system)["persistence"].pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(seen(tmp_path, "TargetStateStored")) == 2, timeout=5, what="re-announced target")
    wait_for(lambda: len(seen(tmp_path, "ReportQueued")) == 3, timeout=5, what="re-announced report")

    with Store.open(str(tmp_path / "agent.db"), readonly=True) as store:
        assert store.load_target().document == {"apps": {}}
        assert store.load_target().etag == '"etag-1"'
        assert [e["message"] for e in store.errors()] == ["cannot apply 'turbo'"]


def test_a_corrupt_database_stops_the_start_with_a_clear_error(tmp_path, port):
    (tmp_path / "agent.db").write_bytes(b"this is not a database" * 100)
    agent = AgentSystem(agent_config(tmp_path, port, {}))
    with pytest.raises(AgentStartError, match="store cannot be used"):
        agent.start()
    assert (tmp_path / "agent.db").read_bytes().startswith(b"this is not a database")
