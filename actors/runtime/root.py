"""The top of the supervision tree, in run.py's process: restart the whole actor tree when its root fails.

Under systemd (``Type=notify``) it says when the tree is ready, feeds the watchdog while the root supervisor
answers, and says why it restarts the tree (``actors.runtime.notify``).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from actors.runtime.hardening import LOOPBACK
from actors.runtime.notify import notify
from actors.runtime.processes import process_alive, reap_children
from actors.runtime.restart import RestartPolicy, decide_restart
from actors.runtime.system import AgentStartError, AgentSystem

log = logging.getLogger("fleetlet.system")

HUNG_AFTER = 60.0  # seconds a live root supervisor may leave status asks unanswered before it counts as hung


def supervise(config: dict, stop: threading.Event, poll: float = 2.0,
              port_holder: Callable[[int], str | None] | None = None) -> int:
    """The top of the supervision tree, in run.py's process.

    When the root supervisor escalates or stops answering (its process died), every actor is ended and
    the tree starts again, with the supervisor section's backoff and intensity; past the limit this
    returns 1 so the service manager sees the failure. Returns 0 once ``stop`` is set, 2 when the agent
    cannot start at all. ``port_holder`` names what holds the admin port when a start finds it taken.
    """
    policy = RestartPolicy.from_config(config["supervisor"])
    history: tuple[float, ...] = ()
    while True:
        system = AgentSystem(config, port_holder)
        try:
            children = system.start()
        except AgentStartError as exc:
            log.error("%s", exc)
            return 2
        log.info("agent running with actors %s (admin on %s:%d)", ", ".join(children), LOOPBACK, system.port)
        notify(f"READY=1\nSTATUS=running with actors {', '.join(children)}")
        reason = _watch(system, stop, poll)
        if reason is None:
            notify("STOPPING=1")
        system.stop()
        if reason is None:
            log.info("agent stopped")
            return 0
        notify(f"STATUS=restarting every actor: {reason}")
        decision = decide_restart(policy, history, time.monotonic())
        history = decision.history
        if decision.delay is None:
            log.critical("giving up after %d restarts of the whole agent: %s", len(history) - 1, reason)
            return 1
        log.error("restarting every actor in %.1f s: %s", decision.delay, reason)
        if stop.wait(decision.delay):
            return 0


def _watch(system: AgentSystem, stop: threading.Event, poll: float) -> str | None:
    """Wait until ``stop`` (None) or until the root supervisor fails (the reason).

    An unanswered status ask alone proves nothing: a supervisor busy with a burst of messages is slow, not
    dead, and restarting the whole tree for it would turn load into an outage. So: a supervisor whose
    process is gone is dead at once; one that is alive but silent counts as hung only after HUNG_AFTER s.
    """
    silent_since: float | None = None
    while not stop.wait(poll):
        reap_children()
        status = system.status(timeout=3.0)
        if status is not None and status.state == "escalated":
            return f"the supervisor escalated: {status.reason}"
        if status is not None:
            silent_since = None
            notify("WATCHDOG=1")  # the tree answers: systemd's WatchdogSec is fed only while it does
            continue
        if system.supervisor_pid is None or not process_alive(system.supervisor_pid):
            return "the root supervisor died"
        silent_since = time.monotonic() if silent_since is None else silent_since
        if time.monotonic() - silent_since >= HUNG_AFTER:
            return f"the root supervisor is alive but has not answered for {HUNG_AFTER:g} s"
        log.warning("the root supervisor is alive but slow to answer")
    return None
