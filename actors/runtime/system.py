"""Start, query and stop the agent's actor system, owning its whole process tree.

thespian's admin calls setsid(), so the admin, every actor and the logger share one process group.
That group is recorded in a run file beside the store; a run that starts after a SIGKILLed one first
ends what is left of the old group, so there is never a second set of actors on the device. Beside it, the
run key file (0600) holds the key every frame of the run is authenticated with (``actors.runtime.frames``):
a CLI that joins the actor system must read it, so only the agent's user (or root) can.

The run file is written twice: before anything forks (this process, its start time, no group yet) and
once the admin is up (its group). A SIGKILL in between leaves an admin whose group nobody recorded; the
next start finds it by what it holds, the admin port, and ends its group if it was started after the
killed run began (so never another program's). A start that finds the port held by an admin it did not
fork refuses to join it: it would be another run's.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import stat
import time
from collections.abc import Callable

from thespian.actors import ActorSystem, ActorSystemException, InvalidActorAddress

import messages
from actors.runtime.frames import rejected_count
from actors.runtime.hardening import LOOPBACK, capabilities, harden_thespian, own_run_key
from actors.runtime.logformat import formatter_config
from actors.runtime.processes import (
    children_of,
    freeze_heap_at_every_fork,
    group_members,
    kill_group,
    listeners_of,
    port_bindable,
    process_alive,
    process_start_time,
    reap_children,
    stat_fields,
)
from actors.runtime.runfiles import make_private, run_files, write_private
from actors.runtime.supervisor import GLOBAL_NAME
from messages.bus.runtime import Boot, Booted, BootFailed, GetStatus, StatusReply
from store import Store, StoreError

log = logging.getLogger("fleetlet.system")


PORT_WAIT = 10.0  # seconds a start waits for the admin port to be free


class AgentStartError(RuntimeError):
    """The agent cannot start; the text says why."""


def log_defs(level: str, log_format: str = "text") -> dict:
    return {
        "version": 1,
        "formatters": {"plain": formatter_config(log_format)},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                                "stream": "ext://sys.stderr", "level": level}},
        "root": {"handlers": ["stderr"], "level": level},
        # thespian's own chatter stays at WARNING so an agent's log speaks of the agent.
        "loggers": {"Thespian": {"level": "WARNING"}},
        "disable_existing_loggers": False,
    }


class AgentSystem:
    """One agent's actor system: run file, admin, root supervisor."""

    def __init__(self, config: dict, port_holder: Callable[[int], str | None] | None = None):
        """``port_holder(port)`` names what holds a port the admin needs (a container), or None."""
        self.config = config
        self.port = config["agent"]["admin_port"]
        self.port_holder = port_holder
        self.run_file, self.key_file = run_files(config)
        self.asys: ActorSystem | None = None
        self.supervisor = None
        self.supervisor_pid: int | None = None  # from Booted: run.py tells a slow supervisor from a dead one
        self.pgids: set[int] = set()

    # -- start ---------------------------------------------------------------------------------------
    def start(self, boot_timeout: float = 30.0) -> tuple[str, ...]:
        self._make_directory()
        previous = self.end_previous_run()
        self._check_store()
        self._write_run_file({})  # before anything forks: a SIGKILL from here on leaves a trace
        # A `run.py status` racing this start, or the admin of a run just stopped, may hold the port for a
        # moment (thespian starts an admin when none answers, and the CLI shuts it down again): wait a
        # little before calling it taken. An admin the killed run forked may bind it late: end it too.
        deadline = time.monotonic() + PORT_WAIT
        while not port_bindable(self.port):
            if previous is not None:
                self._end_orphan_admin(previous)
            if time.monotonic() > deadline:
                holder = self.port_holder(self.port) if self.port_holder else None
                raise AgentStartError(f"admin port {self.port} on {LOOPBACK} is used by "
                                      f"{holder or 'another program'} (set agent.admin_port to a free port)")
            time.sleep(0.2)
        key = own_run_key()
        write_private(self.key_file, key)
        harden_thespian(key)
        others = set(children_of(os.getpid()))  # in a test or a demo, not every child is ours
        self.asys = self._join(key)
        self._record_run(set(children_of(os.getpid())) - others)
        if not self.pgids:  # we joined an admin that another start in this process had just made on the port
            self.asys = None
            self.run_file.unlink(missing_ok=True)  # its admin is not ours to end, now or at the next start
            raise AgentStartError(f"admin port {self.port} on {LOOPBACK} was taken by another agent while "
                                  "this one started")
        self.supervisor = self.asys.createActor("actors.runtime.supervisor.Supervisor", globalName=GLOBAL_NAME)
        reply = self._ask(Boot(self.config), boot_timeout)
        if not isinstance(reply, Booted):
            self.stop()
            reason = reply.reason if isinstance(reply, BootFailed) else f"no answer in {boot_timeout} s"
            raise AgentStartError(f"the agent cannot start: {reason}")
        self.supervisor_pid = reply.pid
        return reply.children

    def _join(self, key: bytes) -> ActorSystem:
        """Start the admin. thespian attaches to whatever listens on the port instead, if anything does by now:
        an admin that is not this run's answers without the run's MAC, and is refused."""
        dropped = rejected_count()
        freeze_heap_at_every_fork()
        try:
            return ActorSystem("multiprocTCPBase", capabilities(self.port),
                               logDefs=log_defs(self.config["agent"]["log_level"], self.config["agent"]["log_format"]),
                               transientUnique=True)
        except (InvalidActorAddress, ActorSystemException) as exc:
            self.key_file.unlink(missing_ok=True)
            if rejected_count() > dropped:
                raise AgentStartError(f"admin port {self.port} on {LOOPBACK} is held by a program that is not "
                                      "this run's admin (its answers do not carry this run's MAC: a stale or "
                                      "foreign admin); stop it or set agent.admin_port") from None
            raise AgentStartError(f"the actor system cannot start on {LOOPBACK}:{self.port}: {exc}") from None

    def _make_directory(self) -> None:
        directory = self.run_file.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(directory.stat().st_mode) & 0o077:
            # Not changed here: it may be a directory the agent shares (a relative store path in /tmp).
            log.warning("the store's directory %s is readable by other users (the agent makes it 0700 only "
                        "when it creates it)", directory)

    def _check_store(self) -> None:
        """Refuse to start on a corrupt or too-new database, before any actor depends on it."""
        path = pathlib.Path(self.config["store"]["path"])
        try:
            Store.open(path, synchronous=self.config["store"]["synchronous"]).close()
        except StoreError as exc:
            raise AgentStartError(f"the store cannot be used: {exc}") from None
        # The store holds target environments and shadows. SQLite gives the WAL and SHM it creates later the
        # database's mode; ones left by an older run are changed here.
        for name in (path.name, path.name + "-wal", path.name + "-shm"):
            make_private(path.with_name(name))

    def _record_run(self, started: set[int]) -> None:
        """Record the process groups of what starting the actor system forked (the admin's setsid group)."""
        fields = [stat_fields(pid) for pid in started]
        self.pgids = {int(f[2]) for f in fields if f} - {os.getpgrp()}
        self._write_run_file({pgid: process_start_time(pgid) for pgid in self.pgids})

    def _write_run_file(self, groups: dict[int, int | None]) -> None:
        write_private(self.run_file, json.dumps({"pid": os.getpid(), "started": process_start_time(os.getpid()),
                                                 "groups": groups}).encode())

    def _end_orphan_admin(self, previous: tuple[int, int]) -> int:
        """End the group of an admin on our port that a killed run forked before it could record it.

        ``previous`` is that run's (pid, start time). The holder must have started after it (start times are
        clock ticks since boot, so this is immune to clock changes) and that run must be dead; a live agent
        on the port is left alone, and the port wait reports it.
        """
        pid, started = previous
        if process_alive(pid) and process_start_time(pid) == started:
            return 0
        ended = 0
        for holder in listeners_of(self.port):
            fields, holder_start = stat_fields(holder), process_start_time(holder)
            if fields is None or holder_start is None or holder_start < started:
                continue
            pgid = int(fields[2])
            if pgid not in (os.getpgrp(), 0):
                ended += kill_group(pgid)
        if ended:
            log.warning("ended %d processes of a run killed while it started", ended)
        return ended

    def end_previous_run(self) -> tuple[int, int] | None:
        """Kill what a previous, SIGKILLed run left behind; that run's (pid, start time), None without a trace."""
        try:
            previous = json.loads(self.run_file.read_text())
            groups = {int(pgid): start for pgid, start in previous["groups"].items()}
            killed_run = (int(previous["pid"]), int(previous.get("started") or 0))
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            return None
        ended = self._end_orphan_admin(killed_run)
        for pgid, start_time in groups.items():
            leader_start = process_start_time(pgid)
            # A live leader with another start time is a recycled pid: not ours. A dead leader with
            # members left is our orphaned actors (nothing else joins a setsid group).
            if leader_start is None or leader_start == start_time:
                ended += kill_group(pgid)
        if ended:
            log.warning("ended %d processes left by a previous run", ended)
        self.run_file.unlink(missing_ok=True)
        return killed_run

    # -- query ---------------------------------------------------------------------------------------
    def _ask(self, msg: object, timeout: float) -> object:
        """The supervisor's decoded answer; None without one (or with no actor system: not started, stopped)."""
        if self.asys is None:
            return None
        raw = self.asys.ask(self.supervisor, messages.encode(msg), timeout)
        return None if raw is None else messages.decode(raw)

    def status(self, timeout: float = 5.0) -> StatusReply | None:
        reply = self._ask(GetStatus(), timeout)
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
        self.key_file.unlink(missing_ok=True)
        self.asys = None
