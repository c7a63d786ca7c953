"""The files of one run beside the store: the run file (its process groups) and the run key file.

Both are the agent's secrets as much as the store is: written 0600 whatever the umask, replaced atomically.
The key authenticates every frame of the run (``actors.runtime.frames``); a CLI that joins the actor system
reads it, so only the agent's user (or root) can talk to the agent.
"""
from __future__ import annotations

import os
import pathlib
import stat

from actors.runtime.frames import KEY_BYTES


class RunKeyError(RuntimeError):
    """The run key file exists but cannot be used; the text says why."""


def run_files(config: dict) -> tuple[pathlib.Path, pathlib.Path]:
    """The run file (process groups) and the run key file of the agent configured by ``config``."""
    store_path = pathlib.Path(config["store"]["path"])
    return store_path.with_name(store_path.name + ".run"), store_path.with_name(store_path.name + ".key")


def write_private(path: pathlib.Path, data: bytes) -> None:
    """Replace ``path`` atomically with a file only its owner can read (0600, whatever the umask)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def read_run_key(path: pathlib.Path) -> bytes | None:
    """The key of the run recorded at ``path``; None when no run is recorded there."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RunKeyError(f"cannot read the run key {path}: {exc.strerror} (only the agent's user, or root, "
                          "can talk to the agent)") from None
    if len(key) != KEY_BYTES:
        raise RunKeyError(f"the run key {path} holds {len(key)} bytes, not {KEY_BYTES}")
    return key


def make_private(path: pathlib.Path) -> None:
    """Files of the agent's own (the store: SQLite gives its WAL and SHM the database's mode) become 0600."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if stat.S_IMODE(mode) & 0o077:
        path.chmod(0o600)
