"""Services an operator or an app stopped through the local API, held stopped: pure.

A hold lasts until the next target state or a start: the store keeps the holds with the etag of the target
in force when they were asked (``HOLDS_KEY``), and holds asked under another target are void, so a new
target releases them without a write. The reconciler applies them to the target it plans for: a held
service is planned as if the target said ``running: false`` (stopped, its container kept).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from messages.protocol.target_state.model import TargetState

HOLDS_KEY = "api.held_services"  # the store key (Store.put/get): {"etag": ..., "holds": [[app id, service], ...]}


def update_holds(record: object, etag: str | None, app_id: str, service_name: str, stopped: bool) -> dict[str, object]:
    """The record after holding (``stopped``) or releasing one service under the target ``etag``."""
    held = holds_in_force(record, etag)
    held = held | {(app_id, service_name)} if stopped else held - {(app_id, service_name)}
    return {"etag": etag, "holds": [list(pair) for pair in sorted(held)]}


def holds_in_force(record: object, etag: str | None) -> frozenset[tuple[str, str]]:
    """The services held under the target ``etag``; nothing for a record of another target, or a malformed one."""
    if not isinstance(record, dict) or record.get("etag") != etag or not isinstance(record.get("holds"), list):
        return frozenset()
    return frozenset((pair[0], pair[1]) for pair in record["holds"]
                     if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair))


def apply_holds(target: TargetState, held: Iterable[tuple[str, str]]) -> TargetState:
    """``target`` with every held service set to ``running: false``."""
    held = frozenset(held)
    if not held:
        return target
    apps = tuple(dataclasses.replace(app, services=tuple(
        dataclasses.replace(service, config=dataclasses.replace(service.config, running=False))
        if (app.app_id, service.service_name) in held else service for service in app.services))
        for app in target.apps)
    return dataclasses.replace(target, apps=apps)
