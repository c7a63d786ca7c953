"""Which container holds a host port: named when the agent cannot start because its admin port is taken.

The one place that reads containers that are not Fleetlet's (any container may publish the port, a
foreign one too); it only reads their names, never changes them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import docker
from docker.errors import DockerException
from requests.exceptions import RequestException


def publishers(summaries: Iterable[Mapping[str, Any]], port: int) -> list[str]:
    """``name (id, image) publishing ip:port/proto`` for every container summary that publishes host ``port``."""
    found = []
    for summary in summaries:
        for binding in summary.get("Ports") or ():
            if binding.get("PublicPort") == port:
                name = (summary.get("Names") or ["?"])[0].lstrip("/")
                found.append(f"container {name} ({str(summary.get('Id', ''))[:12]}, {summary.get('Image')}) "
                             f"publishing {binding.get('IP') or '*'}:{port}/{binding.get('Type', 'tcp')}")
                break
    return found


def port_holder(port: int, client_factory: Callable[..., docker.DockerClient] = docker.from_env) -> str | None:
    """What holds host ``port``, if a running container publishes it; None when none does (or when the engine
    cannot be asked, then the caller can only say the port is held)."""
    try:
        client = client_factory(timeout=5)
        try:
            holders = publishers(client.api.containers(), port)
        finally:
            client.close()
    except (DockerException, RequestException, OSError):
        return None
    return "; ".join(holders) or None
