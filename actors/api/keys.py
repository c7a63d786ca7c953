"""The keys of the local API: the operator's (``api.key_file``, 0600, made on the agent's first start and read
by ``run.py``, so only the agent's user or root holds it) and each opted-in app's, derived from it.

A service of the target labelled ``fleetlet.api = "true"`` gets its app's key in its environment
(``FLEETLET_API_KEY``), added to the target the reconciler plans for: derived, so it is the same on every
pass (the planner never sees a change it did not get from the cloud) and across restarts, and it changes
for every app at once when the operator's key is replaced (their containers are then recreated).
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import pathlib
import secrets

from conf.agent import read_secret
from conf.schema import ConfigError
from messages.protocol.target_state.model import TargetState

API_LABEL = "fleetlet.api"  # io.fleetlet.* is the agent's own (the parser refuses it in a target)
KEY_VARIABLE = "FLEETLET_API_KEY"


class ApiKeyError(RuntimeError):
    """The key file cannot be used; the text says why."""


def operator_key(path: str, create: bool = False) -> str:
    """The key in ``path``; with ``create``, a new one is written there first when there is none (two actors
    creating it at once agree: the file is linked into place only if absent). A file that group or others may
    read is refused."""
    file = pathlib.Path(path)
    if create and not file.exists():
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, file)
        except FileExistsError:
            pass  # another process made it first: its key is the key
        finally:
            tmp.unlink()
    try:
        return read_secret(path, "api.key_file")
    except ConfigError as exc:
        raise ApiKeyError(str(exc)) from None


def service_key(operator: str, app_id: str) -> str:
    """The key of app ``app_id``'s services."""
    return hmac.new(operator.encode(), f"fleetlet-api-app:{app_id}".encode(), hashlib.sha256).hexdigest()


def opted_in(target: TargetState) -> set[str]:
    """The apps with a service that asked for a key."""
    return {app.app_id for app in target.apps for service in app.services
            if dict(service.config.labels).get(API_LABEL) == "true"}


def grant_keys(target: TargetState, operator: str) -> TargetState:
    """``target`` with ``FLEETLET_API_KEY`` in the environment of every service that asked for it: pure and
    deterministic (the environment stays sorted by name, as the parser leaves it)."""
    def granted(app_id: str, service):
        config = service.config
        if dict(config.labels).get(API_LABEL) != "true":
            return service
        environment = dict(config.environment)
        environment[KEY_VARIABLE] = service_key(operator, app_id)
        return dataclasses.replace(service, config=dataclasses.replace(
            config, environment=tuple(sorted(environment.items()))))

    apps = tuple(dataclasses.replace(app, services=tuple(granted(app.app_id, s) for s in app.services))
                 for app in target.apps)
    return dataclasses.replace(target, apps=apps)
