"""Make thespian safe and observable on a device.

thespian's TCP transport unpickles whatever reaches an actor's socket and, left alone, binds every actor
and the admin to all interfaces: an open port would be remote code execution on the device, and even on
loopback any local user could become the agent. Every process that starts or joins the actor system calls
:func:`harden_thespian` first: sockets bind to loopback, and every frame is authenticated under the run's
key (``actors.runtime.frames``). Actor processes are forked from it and inherit both the patch and the key.
"""
from __future__ import annotations

import faulthandler
import importlib
import os
import signal
from typing import Any

from thespian.system.transport import IPBase
from thespian.system.transport.streamBuffer import ackDataErrPacket, ackPacket, toSendBuffer

from actors.runtime.frames import KEY_BYTES, BoundedReceiveBuffer, FrameCodec

# The module, not the class of the same name its package exports.
_tcp: Any = importlib.import_module("thespian.system.transport.TCPTransport")

LOOPBACK = "127.0.0.1"
_FATAL_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT)


def _loopback_bind_args(address):
    host, port = address.bindname[:2]
    return ((LOOPBACK if host in ("", "0.0.0.0") else host, port),)


_own_key: bytes | None = None
_installed_key: bytes | None = None


def own_run_key() -> bytes:
    """The key of the runs this process starts: made once, before any admin forks (every actor inherits it).

    One per process, not one per start: a process (a test, a bench) may hold several actor systems at once,
    and thespian's transport has one serializer per process.
    """
    global _own_key
    if _own_key is None:
        _own_key = os.urandom(KEY_BYTES)
    return _own_key


def harden_thespian(key: bytes) -> bytes | None:
    """Bind every actor socket to loopback, have addresses advertise loopback, and authenticate every frame
    this process sends or receives under ``key``; returns the key in force before (None: none was).

    Frames are signed and checked where thespian serializes and parses them: its module-level serializer,
    receive buffer and the two ACK frames it precomputes.
    """
    global _installed_key
    os.environ["THESPIAN_BASE_IPADDR"] = LOOPBACK
    IPBase.IPActorAddress.bindArgs = property(_loopback_bind_args)
    codec = FrameCodec(key)
    _tcp.serializer = codec
    _tcp.ReceiveBuffer = BoundedReceiveBuffer
    _tcp.ackMsg = toSendBuffer(ackPacket, codec.dumps)
    _tcp.ackDataErrMsg = toSendBuffer(ackDataErrPacket, codec.dumps)
    previous, _installed_key = _installed_key, key
    return previous


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
