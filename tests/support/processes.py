"""Processes in tests: the tree below a pid, whether one lives, ending some by pid (tests end what they start)."""
from __future__ import annotations

import os
import pathlib
import signal

from actors.runtime.processes import children_of, reap_children


def descendants(pid: int) -> set[int]:
    found, frontier = set(), [pid]
    while frontier:
        for child in children_of(frontier.pop()):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    """Running or sleeping: not gone, not a zombie."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def kill_pids(pids) -> None:
    """SIGKILL each of ``pids`` that still exists, then reap what were our children."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    reap_children()
