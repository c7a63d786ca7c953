"""Relaying bytes between two sockets, for the tests' proxies (a cuttable link, the fault suite's front)."""
from __future__ import annotations

import socket


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until either ends, then shut both down (which ends the opposite pump too)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    for sock in (source, sink):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
