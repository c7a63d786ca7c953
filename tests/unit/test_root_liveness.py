"""run.py's watch over the root supervisor: a slow supervisor is not a dead one."""
from __future__ import annotations

import os
import subprocess
import threading

from actors.runtime import root
from messages.bus.runtime import StatusReply


class FakeSystem:
    """Answers status from a script: None is an ask that timed out."""

    def __init__(self, answers, pid, stop: threading.Event):
        self.answers, self.supervisor_pid, self.stop, self.asked = list(answers), pid, stop, 0

    def status(self, timeout: float):
        self.asked += 1
        if not self.answers:
            self.stop.set()
            return None
        return self.answers.pop(0)


RUNNING = StatusReply("running", None, (), "test")


def test_an_alive_supervisor_that_is_slow_to_answer_is_not_restarted():
    stop = threading.Event()
    system = FakeSystem([None, None, None, RUNNING, None, None, RUNNING], os.getpid(), stop)
    assert root._watch(system, stop, poll=0.001) is None  # stopped by the script's end, not a restart
    assert system.asked == 8


def test_a_dead_supervisor_is_restarted_at_the_first_silence():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stop = threading.Event()
    system = FakeSystem([RUNNING, None, RUNNING], dead.pid, stop)
    assert root._watch(system, stop, poll=0.001) == "the root supervisor died"
    assert system.asked == 2


def test_a_live_supervisor_silent_for_too_long_counts_as_hung(monkeypatch):
    monkeypatch.setattr(root, "HUNG_AFTER", 0.0)
    stop = threading.Event()
    system = FakeSystem([None, RUNNING], os.getpid(), stop)
    assert "has not answered" in root._watch(system, stop, poll=0.001)
