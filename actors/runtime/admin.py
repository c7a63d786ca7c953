"""The admin client: talk to a running agent's supervisor from another process (status, poll-now).
"""
from __future__ import annotations

import os
import signal

from thespian.actors import ActorSystem

import messages
from actors.runtime.hardening import capabilities, harden_thespian
from actors.runtime.processes import children_of, port_in_use
from actors.runtime.supervisor import GLOBAL_NAME
from messages.bus.runtime import GetStatus, StatusReply


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
        supervisor = asys.createActor("actors.runtime.supervisor.Supervisor", globalName=GLOBAL_NAME)
        for msg in tell:
            asys.tell(supervisor, messages.encode(msg))
        raw = asys.ask(supervisor, messages.encode(GetStatus()), timeout)
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
