"""The actor system forks from a heap that the garbage collector no longer traverses (gc.freeze), so a
collection in an actor does not copy the pages it shares with the agent's main process."""
from __future__ import annotations

import gc
from types import SimpleNamespace

import actors.runtime.system as system


def test_every_object_of_the_main_process_is_frozen_when_the_actor_system_forks(monkeypatch):
    frozen_at_start: list[int] = []

    def actor_system(*args, **kwargs):
        frozen_at_start.append(gc.get_freeze_count())
        return "the actor system"

    monkeypatch.setattr(system, "ActorSystem", actor_system)
    gc.unfreeze()
    try:
        agent = SimpleNamespace(port=1, config={"agent": {"log_level": "INFO"}})
        assert system.AgentSystem._join(agent, b"key") == "the actor system"  # type: ignore[arg-type]
    finally:
        gc.unfreeze()  # this test process is not about to fork
    assert frozen_at_start and frozen_at_start[0] > 1000
