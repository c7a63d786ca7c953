"""The device's current state in report form (pure): what the reconciler announces and the reporter sends.

Built from the engine's view, the planner's verdicts, the marked failures and the steps in flight, so a
report says where each service stands *now* (downloading, applying, failed), not what was last done.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from actors.target.model import ACTIVE_STATUSES, EngineState, Key, Pull, Step, containers_by_key
from messages.protocol.target_state import TargetState


def report_state(target: TargetState, current: EngineState, verdicts: list[dict], failed: Mapping[Key, str],
                 in_flight: Iterable[Step]) -> dict:
    """The device's current state in report form: per app its update status, per service its container
    id, image, status and (when marked failed) the reason. No nulls: in a report patch null deletes."""
    in_flight = list(in_flight)
    by_key = containers_by_key(current.containers)
    pulling = {step.key for step in in_flight if isinstance(step, Pull)}
    keys = {(app.app_id, service.service_name) for app in target.apps for service in app.services} | set(by_key)
    apps: dict[str, dict] = {}
    for app_id, service_name in sorted(keys):
        containers = by_key.get((app_id, service_name))
        if containers:
            shown = min(containers, key=lambda c: (c.status not in ACTIVE_STATUSES, c.id))
            row = {"containerId": shown.id, "image": shown.image, "status": shown.status}
        else:
            service = target.app(app_id).service(service_name)
            row = {"image": service.config.image,
                   "status": "downloading" if (app_id, service_name) in pulling else "absent"}
        if (app_id, service_name) in failed:
            row["reason"] = failed[app_id, service_name]
        apps.setdefault(app_id, {"services": {}})["services"][service_name] = row
    unsettled = {row["app_id"] for row in verdicts if row["status"] != "converged"}
    for app_id, app in apps.items():
        if any(key[0] == app_id for key in failed):
            app["update_status"] = "failed"
        elif any(step.app_id == app_id and isinstance(step, Pull) for step in in_flight):
            app["update_status"] = "downloading"
        elif app_id in unsettled or any(step.app_id == app_id for step in in_flight):
            app["update_status"] = "applying"
        else:
            app["update_status"] = "done"
    return {"apps": apps}
