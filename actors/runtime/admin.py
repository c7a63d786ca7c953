"""The admin client: talk to a running agent's supervisor from another process (status, poll-now).

It joins the actor system with the run's key (read from the run key file, so only the agent's user or
root can), and every answer is checked against it before thespian unpickles it: a program that holds the
admin port without being this run's admin (a stale admin, a container, any local process) is named as
such, and nothing it sends is unpickled.
"""
from __future__ import annotations

import os
import signal

from thespian.actors import ActorSystem, ActorSystemException, InvalidActorAddress

import messages
from actors.runtime.frames import rejected_count
from actors.runtime.hardening import LOOPBACK, capabilities, harden_thespian
from actors.runtime.processes import children_of, port_in_use
from actors.runtime.runfiles import RunKeyError, read_run_key, run_files
from actors.runtime.supervisor import GLOBAL_NAME
from messages.bus.runtime import GetStatus, StatusReply


class AdminError(RuntimeError):
    """Something is wrong with asking the agent (not merely: no agent runs); the text says what."""


def query_status(config: dict, tell: tuple = (), timeout: float = 5.0) -> StatusReply | None:
    """From another process (run.py status, poll-now): hand the running agent's supervisor the messages in
    ``tell`` (routed like any published message), then ask for its status; None when no agent answers.

    Raises :class:`AdminError` when the run key cannot be read, or when what answers on the admin port
    is not this run's admin. Messages between two actors keep their order, so an answer means ``tell``
    was routed. Bounded by ``timeout`` as a whole (an admin dying mid-handshake must not hang the caller).
    thespian starts an admin when none answers; one started here by accident is shut down again.
    """
    port = config["agent"]["admin_port"]
    try:
        key = read_run_key(run_files(config)[1])
    except RunKeyError as exc:
        raise AdminError(str(exc)) from None
    if key is None or not port_in_use(port):  # no run recorded, or its admin is gone
        return None
    previous_key = harden_thespian(key)
    dropped = rejected_count()

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
        supervisor = asys.createActor("actors.runtime.supervisor.Supervisor", globalName=GLOBAL_NAME)
        for msg in tell:
            asys.tell(supervisor, messages.encode(msg))
        raw = asys.ask(supervisor, messages.encode(GetStatus()), timeout)
        reply = None if raw is None else messages.decode(raw)
        asys = None
        return reply if isinstance(reply, StatusReply) else None
    except (TimeoutError, InvalidActorAddress, ActorSystemException):
        if rejected_count() > dropped:
            raise AdminError(f"the program on {LOOPBACK}:{port} is not this agent's admin: its answers do not "
                             "carry the run's MAC and were dropped unread") from None
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if asys is not None and set(children_of(os.getpid())) - others:
            asys.shutdown()
        if previous_key is not None:
            harden_thespian(previous_key)
