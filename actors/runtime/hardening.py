"""Make thespian safe and observable on a device.

thespian's TCP transport unpickles whatever reaches an actor's socket and, left alone, binds every actor
and the admin to all interfaces: an open port would be remote code execution on the device. Every
process that starts or joins the actor system calls :func:`harden_thespian` first; actor processes are
forked from it and inherit the patch.
"""
from __future__ import annotations

import faulthandler
import os
import signal

from thespian.system.transport import IPBase

LOOPBACK = "127.0.0.1"
_FATAL_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT)


def _loopback_bind_args(address):
    host, port = address.bindname[:2]
    return ((LOOPBACK if host in ("", "0.0.0.0") else host, port),)


def harden_thespian() -> None:
    """Bind every actor socket to loopback and have addresses advertise loopback."""
    os.environ["THESPIAN_BASE_IPADDR"] = LOOPBACK
    IPBase.IPActorAddress.bindArgs = property(_loopback_bind_args)


def capabilities(admin_port: int) -> dict:
    return {
        "Admin Port": admin_port,
        "Process Startup Method": "fork",
        # Never load actor code sent by a peer: only classes importable on this device run here.
        "AllowRemoteActorSources": "No",
    }


def harden_actor_process() -> None:
    """Let a fatal signal (a segfault in a C extension) kill the process so the supervisor sees it.

    thespian installs Python handlers for these signals, which makes a segfaulting actor spin forever.
    """
    faulthandler.enable()
    for signum in _FATAL_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
