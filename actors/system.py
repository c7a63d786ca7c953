"""Start, query and stop the agent's actor system, owning its whole process tree.

thespian's admin calls setsid(), so the admin, every actor and the logger share one process group.
That group is recorded in a run file beside the store; a run that starts after a SIGKILLed one first
ends what is left of the old group, so there is never a second set of actors on the device.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import pathlib
import signal
import socket
import threading
import time

from thespian.actors import ActorSystem

import messages
from actors.hardening import LOOPBACK, capabilities, harden_thespian
from actors.restart_policy import RestartPolicy, decide_restart
from actors.supervisor import GLOBAL_NAME
from store import Store, StoreError
from messages.runtime import Boot, Booted, BootFailed, StatusReply, StatusRequest

log = logging.getLogger("fleetlet.system")
_PR_SET_CHILD_SUBREAPER = 36
PORT_WAIT = 10.0  # seconds a start waits for the admin port to be free


class AgentStartError(RuntimeError):
    """The agent cannot start; the text says why."""


def become_subreaper() -> None:
    """Orphans of our actors (a child whose parent actor died) reparent to us, not to init."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_children() -> None:
    """Collect exit statuses of orphans that reparented to us, so none is left a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields after "pid (comm)": state, ppid, pgrp, ...


def process_start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def children_of(pid: int) -> list[int]:
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def kill_group(pgid: int, timeout: float = 5.0) -> int:
    """SIGKILL a process group and wait until it is gone; returns how many processes it had."""
    members = group_members(pgid)
    if not members:
        return 0
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return 0
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        reap_children()
        time.sleep(0.02)
    return len(members)


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((LOOPBACK, port)) == 0


def log_defs(level: str) -> dict:
    return {
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                                "stream": "ext://sys.stderr", "level": level}},
        "root": {"handlers": ["stderr"], "level": level},
        # thespian's own chatter stays at WARNING so an agent's log speaks of the agent.
        "loggers": {"Thespian": {"level": "WARNING"}},
        "disable_existing_loggers": False,
    }


class AgentSystem:
    """One agent's actor system: run file, admin, root supervisor."""

    def __init__(self, config: dict):
        self.config = config
        self.port = config["agent"]["admin_port"]
        store_path = pathlib.Path(config["store"]["path"])
        self.run_file = store_path.with_name(store_path.name + ".run")
        self.asys: ActorSystem | None = None
        self.supervisor = None
        self.pgids: set[int] = set()

    # -- start ---------------------------------------------------------------------------------------
    def start(self, boot_timeout: float = 30.0) -> tuple[str, ...]:
        self.run_file.parent.mkdir(parents=True, exist_ok=True)
        self.end_previous_run()
        self._check_store()
        # A `run.py status` racing this start may hold the port for a moment (thespian starts an admin
        # when none answers, and the CLI shuts it down again): wait a little before calling it taken.
        deadline = time.monotonic() + PORT_WAIT
        while port_in_use(self.port):
            if time.monotonic() > deadline:
                raise AgentStartError(f"admin port {self.port} on {LOOPBACK} is used by another program "
                                      "(set agent.admin_port to a free port)")
            time.sleep(0.2)
        harden_thespian()
        others = set(children_of(os.getpid()))  # in a test or a demo, not every child is ours
        self.asys = ActorSystem("multiprocTCPBase", capabilities(self.port),
                                logDefs=log_defs(self.config["agent"]["log_level"]),
                                transientUnique=True)
        self._record_run(set(children_of(os.getpid())) - others)
        self.supervisor = self.asys.createActor("actors.supervisor.Supervisor", globalName=GLOBAL_NAME)
        reply = self._ask(Boot(self.config), boot_timeout)
        if not isinstance(reply, Booted):
            self.stop()
            reason = reply.reason if isinstance(reply, BootFailed) else f"no answer in {boot_timeout} s"
            raise AgentStartError(f"the agent cannot start: {reason}")
        return reply.children

    def _check_store(self) -> None:
        """Refuse to start on a corrupt or too-new database, before any actor depends on it."""
        try:
            Store.open(self.config["store"]["path"], synchronous=self.config["store"]["synchronous"]).close()
        except StoreError as exc:
            raise AgentStartError(f"the store cannot be used: {exc}") from None

    def _record_run(self, started: set[int]) -> None:
        """Record the process groups of what starting the actor system forked (the admin's setsid group)."""
        fields = [_stat_fields(pid) for pid in started]
        self.pgids = {int(f[2]) for f in fields if f} - {os.getpgrp()}
        leaders = {pgid: process_start_time(pgid) for pgid in self.pgids}
        tmp = self.run_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "groups": leaders}))
        os.replace(tmp, self.run_file)

    def end_previous_run(self) -> int:
        """Kill what a previous, SIGKILLed run left behind; returns how many processes were ended."""
        try:
            previous = json.loads(self.run_file.read_text())
            groups = {int(pgid): start for pgid, start in previous["groups"].items()}
        except (OSError, ValueError, KeyError, AttributeError):
            return 0
        ended = 0
        for pgid, start_time in groups.items():
            leader_start = process_start_time(pgid)
            # A live leader with another start time is a recycled pid: not ours. A dead leader with
            # members left is our orphaned actors (nothing else joins a setsid group).
            if leader_start is None or leader_start == start_time:
                ended += kill_group(pgid)
        if ended:
            log.warning("ended %d processes left by a previous run", ended)
        self.run_file.unlink(missing_ok=True)
        return ended

    # -- query ---------------------------------------------------------------------------------------
    def _ask(self, msg, timeout: float):
        raw = self.asys.ask(self.supervisor, messages.encode(msg), timeout)
        return None if raw is None else messages.decode(raw)

    def status(self, timeout: float = 5.0) -> StatusReply | None:
        reply = self._ask(StatusRequest(), timeout)
        return reply if isinstance(reply, StatusReply) else None

    def pids(self) -> list[int]:
        return sorted(pid for pgid in self.pgids for pid in group_members(pgid))

    # -- stop ------------------------------------------------------------------------------------------
    def stop(self, timeout: float | None = None) -> None:
        timeout = self.config["agent"]["stop_timeout"] if timeout is None else timeout
        if self.asys is not None:
            try:
                self.asys.shutdown()
            except Exception as exc:  # noqa: BLE001 - a dead admin must not stop the cleanup below
                log.warning("actor system shutdown: %s", exc)
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            reap_children()
            time.sleep(0.05)
        for pgid in self.pgids:
            kill_group(pgid)
        reap_children()
        self.run_file.unlink(missing_ok=True)
        self.asys = None


def supervise(config: dict, stop: threading.Event, poll: float = 2.0) -> int:
    """The top of the supervision tree, in run.py's process.

    When the root supervisor escalates or stops answering (its process died), every actor is ended and
    the tree starts again, with the supervisor section's backoff and intensity; past the limit this
    returns 1 so the service manager sees the failure. Returns 0 once ``stop`` is set, 2 when the agent
    cannot start at all.
    """
    policy, history = RestartPolicy.from_config(config["supervisor"]), ()
    while True:
        system = AgentSystem(config)
        try:
            children = system.start()
        except AgentStartError as exc:
            log.error("%s", exc)
            return 2
        log.info("agent running with actors %s (admin on %s:%d)", ", ".join(children), LOOPBACK, system.port)
        reason = _watch(system, stop, poll)
        system.stop()
        if reason is None:
            log.info("agent stopped")
            return 0
        decision = decide_restart(policy, history, time.monotonic())
        history = decision.history
        if decision.delay is None:
            log.critical("giving up after %d restarts of the whole agent: %s", len(history) - 1, reason)
            return 1
        log.error("restarting every actor in %.1f s: %s", decision.delay, reason)
        if stop.wait(decision.delay):
            return 0


def _watch(system: AgentSystem, stop: threading.Event, poll: float) -> str | None:
    """Wait until ``stop`` (None) or until the root supervisor fails (the reason)."""
    silent = 0
    while not stop.wait(poll):
        reap_children()
        status = system.status(timeout=3.0)
        if status is not None and status.state == "escalated":
            return f"the supervisor escalated: {status.reason}"
        silent = silent + 1 if status is None else 0
        if silent >= 2:
            return "the root supervisor stopped answering"
    return None


def query_status(config: dict, tell: tuple = (), timeout: float = 5.0) -> StatusReply | None:
    """From another process (run.py status, poll-now): hand the running agent's supervisor the messages in
    ``tell`` (routed like any published message), then ask for its status; None when no agent answers.

    Messages between two actors keep their order, so an answer means ``tell`` was routed. Bounded by
    ``timeout`` as a whole (an admin dying mid-handshake must not hang the caller). thespian
    starts an admin when none answers; one started here by accident is shut down again.
    """
    port = config["agent"]["admin_port"]
    if not port_in_use(port):
        return None
    harden_thespian()

    def give_up(*_):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    asys = None
    try:
        others = set(children_of(os.getpid()))
        asys = ActorSystem("multiprocTCPBase", capabilities(port), logDefs=None)
        if set(children_of(os.getpid())) - others:  # no agent after all: this call started an admin
            return None
        supervisor = asys.createActor("actors.supervisor.Supervisor", globalName=GLOBAL_NAME)
        for msg in tell:
            asys.tell(supervisor, messages.encode(msg))
        raw = asys.ask(supervisor, messages.encode(StatusRequest()), timeout)
        reply = None if raw is None else messages.decode(raw)
        asys = None
        return reply if isinstance(reply, StatusReply) else None
    except TimeoutError:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if asys is not None and set(children_of(os.getpid())) - others:
            asys.shutdown()
