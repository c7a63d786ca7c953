"""Sockets in tests: the TCP ports processes listen on, read from /proc (no tool needed), and relaying bytes
between two sockets for the tests' proxies (a cuttable link, the fault suite's front)."""
from __future__ import annotations

import os
import socket


def listening_sockets(pids) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the processes ``pids`` listen on, from /proc."""
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # it has just exited
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                hex_addr, hex_port = fields[1].split(":")
                found.append((_ip(hex_addr), int(hex_port, 16)))
    return found


def _ip(hex_addr: str) -> str:
    if len(hex_addr) == 8:
        return ".".join(str(int(hex_addr[i:i + 2], 16)) for i in (6, 4, 2, 0))
    return "ipv6:" + hex_addr


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
