"""The device's current state in report form (pure): what the reconciler announces and the reporter sends.

Built from the engine's view, the planner's verdicts, the marked failures and the steps in flight, so a
report says where each service stands *now* (downloading, applying, failed), not what was last done.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypedDict

from actors.target.engine.pull_progress import percent
from actors.target.model import ACTIVE_STATUSES, EngineState, Key, Pull, Step, containers_by_key
from actors.target.planner import VerdictRow
from messages.protocol.target_state import TargetState


class AppReport(TypedDict):
    """One app in the report: its services by name (each a row of strings, and a pull's progress) and its
    update status."""
    services: dict[str, dict[str, object]]
    update_status: str  # failed | downloading | applying | done


PullFigures = tuple[int, int, int]  # a pull's bytes downloaded, extracted, needed in all (0: not known yet)


def report_state(target: TargetState, current: EngineState, verdicts: Sequence[VerdictRow],
                 failed: Mapping[Key, str], in_flight: Iterable[Step]) -> dict[str, dict[str, AppReport]]:
    """The device's current state in report form: per app its update status, per service its container
    id, image, status and (when marked failed) the reason. No nulls: in a report patch null deletes."""
    in_flight = list(in_flight)
    by_key = containers_by_key(current.containers)
    pulling = {step.key for step in in_flight if isinstance(step, Pull)}
    wanted = {(app.app_id, service.service_name): service for app in target.apps for service in app.services}
    services: dict[str, dict[str, dict[str, object]]] = {}
    for app_id, service_name in sorted(wanted.keys() | by_key.keys()):
        containers = by_key.get((app_id, service_name))
        if containers:
            shown = min(containers, key=lambda c: (c.status not in ACTIVE_STATUSES, c.id))
            row: dict[str, object] = {"containerId": shown.id, "image": shown.image, "status": shown.status}
        else:  # no container: the key is a target service's
            row = {"image": wanted[app_id, service_name].config.image,
                   "status": "downloading" if (app_id, service_name) in pulling else "absent"}
        if (app_id, service_name) in failed:
            row["reason"] = failed[app_id, service_name]
        services.setdefault(app_id, {})[service_name] = row
    unsettled = {row["app_id"] for row in verdicts if row["status"] != "converged"}
    apps: dict[str, AppReport] = {}
    for app_id, app_services in services.items():
        if any(key[0] == app_id for key in failed):
            status = "failed"
        elif any(step.app_id == app_id and isinstance(step, Pull) for step in in_flight):
            status = "downloading"
        elif app_id in unsettled or any(step.app_id == app_id for step in in_flight):
            status = "applying"
        else:
            status = "done"
        apps[app_id] = {"services": app_services, "update_status": status}
    return {"apps": apps}


def with_progress(state: Mapping[str, object], progress: Mapping[Key, PullFigures]) -> dict[str, object]:
    """`state` (a report_state result) with each pulling service's progress, `{"bytes", "total", "percent"}`
    (bytes downloaded of the bytes it needs), and no progress on the others."""
    apps = state.get("apps")
    if not isinstance(apps, dict):
        return dict(state)
    shown: dict[str, object] = {}
    for app_id, app in apps.items():
        services = {}
        for service_name, row in app["services"].items():
            row = {key: value for key, value in row.items() if key != "progress"}
            if (app_id, service_name) in progress:
                downloaded, _extracted, total = progress[app_id, service_name]
                row["progress"] = {"bytes": downloaded, "total": total, "percent": percent(downloaded, total)}
            services[service_name] = row
        shown[app_id] = {**app, "services": services}
    return {**state, "apps": shown}
