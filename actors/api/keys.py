"""The operator's key of the local API (``api.key_file``, 0600): made by the agent on its first start, read
by ``run.py`` (so only the agent's user, or root, holds it)."""
from __future__ import annotations

import pathlib
import secrets

from actors.runtime.runfiles import write_private
from conf.agent import read_secret
from conf.schema import ConfigError


class ApiKeyError(RuntimeError):
    """The key file cannot be used; the text says why."""


def operator_key(path: str, create: bool = False) -> str:
    """The key in ``path``; with ``create``, a new one is written there first when there is none. A file that
    group or others may read is refused."""
    file = pathlib.Path(path)
    if create and not file.exists():
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(file, (secrets.token_urlsafe(32) + "\n").encode())
    try:
        return read_secret(path, "api.key_file")
    except ConfigError as exc:
        raise ApiKeyError(str(exc)) from None
