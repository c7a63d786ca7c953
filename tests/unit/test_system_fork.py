"""Every fork in the agent's process tree freezes the parent's heap first (gc.freeze), so a collection in an
actor does not copy the pages it shares with the process it was forked from."""
from __future__ import annotations

import gc
import os

import actors.runtime.system as system
from actors.runtime.processes import freeze_heap_at_every_fork


def _frozen_in_a_child() -> int:
    """How many objects a freshly forked child inherits frozen (its exit status: 0 for none, 1 for some)."""
    pid = os.fork()
    if pid == 0:
        os._exit(1 if gc.get_freeze_count() > 1000 else 0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_child_forked_after_the_actor_system_starts_inherits_a_frozen_heap(monkeypatch):
    monkeypatch.setattr(system, "ActorSystem", lambda *args, **kwargs: "the actor system")
    gc.unfreeze()
    try:
        agent = system.AgentSystem.__new__(system.AgentSystem)
        agent.port, agent.config = 1, {"agent": {"log_level": "INFO", "log_format": "text"}}
        assert agent._join(b"key") == "the actor system"
        assert _frozen_in_a_child() == 1
    finally:
        gc.unfreeze()  # this test process keeps running


def test_the_fork_handler_is_registered_once(monkeypatch):
    registered = []
    monkeypatch.setattr(os, "register_at_fork", lambda **handlers: registered.append(handlers))
    monkeypatch.setattr("actors.runtime.processes._freezing", False)
    freeze_heap_at_every_fork()
    freeze_heap_at_every_fork()
    assert len(registered) == 1
