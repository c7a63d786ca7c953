"""The agent's process tree: a child subreaper, process groups read from /proc, and ending them.

thespian's admin calls setsid(), so the admin, every actor and the logger share one process group;
these helpers find and end such a group, and never a process this run did not fork.
"""
from __future__ import annotations

import ctypes
import gc
import os
import pathlib
import signal
import socket
import time

from actors.runtime.hardening import LOOPBACK

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphans of our actors (a child whose parent actor died) reparent to us, not to init."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def freeze_heap_at_every_fork() -> None:
    """From now on every fork in this process and in the processes it forks freezes the parent's heap first.

    Each actor process is forked (main process, admin, supervisor, actor, engine worker) and shares its
    parent's heap until it writes to it. A full collection in a child writes to the header of every object it
    traverses, which copies each inherited page into that child at some moment of its work (1-3 MiB per actor,
    measured under the fault suite's flood); frozen objects are never traversed. The collection first keeps
    garbage from being frozen for good. Registered once: fork handlers cannot be removed, and children inherit them.
    """
    global _freezing
    if not _freezing:
        os.register_at_fork(before=_collect_and_freeze)
        _freezing = True


def _collect_and_freeze() -> None:
    gc.collect()
    gc.freeze()


_freezing = False


def reap_children() -> None:
    """Collect exit statuses of orphans that reparented to us, so none is left a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stat_fields(pid: int) -> list[str] | None:
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields after "pid (comm)": state, ppid, pgrp, ...


def process_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def process_start_time(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields and int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def children_of(pid: int) -> list[int]:
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
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


def listeners_of(port: int) -> list[int]:
    """The processes holding a listening TCP socket on ``port`` of loopback (IPv4), from /proc."""
    inodes = set()
    try:
        table = pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return []
    for line in table:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port:  # 0A: LISTEN
            inodes.add(f"socket:[{inode}]")
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or not inodes:
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    found.append(int(entry.name))
                    break
            except OSError:
                continue
    return found


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((LOOPBACK, port)) == 0


def port_bindable(port: int) -> bool:
    """Whether a new admin can bind ``port``, judged as thespian judges it (a bind with SO_REUSEADDR).

    Nothing listening is not enough: a dying admin, or any connection whose source port this is, also
    holds it, and thespian then retries for 11 s and fails with "not a valid or useable ActorSystem Admin".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
        return True
