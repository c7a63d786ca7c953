"""Disk space checks: whether something of a given size fits on a filesystem beside a reserve kept free.

One rule for the two places that grow the device's disk: a pull (the engine's data root, `reconciler.disk_reserve_mb`)
and a new target in the store (its directory, `store.disk_reserve_mb`).
"""
from __future__ import annotations

import os

MIB = 1024 * 1024


def free_bytes(path: str | os.PathLike[str]) -> int:
    """The bytes an unprivileged writer may still use on the filesystem holding `path`."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def refusal(needed: int, free: int, reserve_mb: int) -> str | None:
    """Why `needed` bytes must not be written (figures in MB, what is needed rounded up), or None if they fit."""
    available = free - reserve_mb * MIB
    if needed <= available:
        return None
    return (f"not enough disk space: needs {-(-needed // MIB)} MB, {max(0, available) // MIB} MB free "
            f"(beyond the {reserve_mb} MB kept in reserve)")
