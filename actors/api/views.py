"""What the local API answers with, built from what the agent holds: pure.

The status document is the one ``run.py status`` prints; the local shadow is the device's copy of one
shadow, as the store keeps it, with the reports still in the outbox applied (what the cloud will hold once
they arrive), online or not. A PATCH is answered 202 when handed on: the store has it a moment later.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from messages.bus.runtime import StatusReply
from messages.protocol.patches import apply_patch
from messages.protocol.shadow_document import compute_delta, stored_form
from store import TargetRecord, TargetRejection, newer_rejection


def status_document(reply: StatusReply, errors: Sequence[Mapping[str, object]],
                    target: tuple[TargetRecord | None, TargetRejection | None] = (None, None)) -> dict[str, Any]:
    """The actors, the target state in force (and the last one refused, when newer), the recorded errors."""
    stored, rejection = target
    release: dict[str, Any] = {"etag": stored.etag if stored else None,
                               "received_at": stored.received_at if stored else None}
    if newer_rejection(stored, rejection):
        assert rejection is not None
        release["rejected"] = {"etag": rejection.etag, "reason": rejection.reason, "at": rejection.at}
    actors = [{"name": c.name, "class": c.cls, "pid": c.pid, "state": c.state, "restarts": c.restarts,
               "last_error": c.last_error, "held_messages": c.held_messages, "superseded_messages": c.superseded,
               "dropped_messages": c.dropped} for c in reply.children]
    return {"state": reply.state, "reason": reply.reason, "version": reply.version, "actors": actors,
            "target": release, "errors": [dict(error) for error in errors]}


def status_lines(doc: Mapping[str, Any]) -> list[str]:
    """The status document as ``run.py status`` prints it."""
    lines = [f"agent {doc['version']}: {doc['state']}" + (f" ({doc['reason']})" if doc["reason"] else "")]
    target = doc.get("target") or {}
    if target.get("etag") or target.get("rejected"):
        lines.append(f"  target {target.get('etag')}" + (f"; refused {target['rejected']['etag']}: "
                                                         f"{target['rejected']['reason']}" if target.get("rejected")
                                                         else ""))
    for actor in doc["actors"]:
        lines.append(f"  {actor['name']:<16} pid={actor['pid']} state={actor['state']} "
                     f"restarts={actor['restarts']} held={actor['held_messages']} "
                     f"dropped={actor['dropped_messages']} last_error={actor['last_error']}")
    for error in doc["errors"]:
        lines.append(f"  error {error['source']}/{error['key']}: {error['message']} (x{error['count']})")
    return lines


def local_shadow(document: Mapping[str, Any] | None, version: int | None, accepted: Mapping[str, Any] | None,
                 pending: Mapping[str, Any] | None, answered: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"state": {"desired", "reported", "delta"}, "version", "pending"}`` of one shadow.

    ``document`` is the last full shadow the device read (None: never read), ``accepted`` what the cloud
    last accepted of our reports, ``pending`` the merged report still in the outbox, ``answered`` top-level
    keys answered on their way to the outbox (their whole value; None: deleted). ``pending`` in the answer
    tells whether the cloud has not got all of ``reported`` yet.
    """
    state = (document or {}).get("state") or {}
    desired = state.get("desired") or {}
    reported = state.get("reported") or dict(accepted or {})
    if pending:
        reported = apply_patch(reported, dict(pending))
    for key, value in (answered or {}).items():
        reported = {k: v for k, v in reported.items() if k != key} if value is None else {**reported, key: value}
    reported = stored_form(reported) or {}
    return {"state": {"desired": desired, "reported": reported, "delta": compute_delta(desired, reported)},
            "version": version, "pending": bool(pending or answered)}


def merged_report(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A ``{"reported": patch}`` as a handler's answer: for each top-level key patched, its whole new value,
    the patch merged into what the device reports now (null deletes, as in a shadow update)."""
    answer: dict[str, Any] = {}
    for key, value in patch.items():
        held = current.get(key)
        if isinstance(value, dict) and isinstance(held, dict):
            answer[key] = stored_form(apply_patch(held, value))
        else:
            answer[key] = stored_form(value)
    return answer
