"""`run.py plan [--json]`: the steps the reconciler would run now, each with its reason, without running
them; and `run.py poll-now`: ask the running agent to poll its target state at once.

`plan` asks the running agent's local API; with no agent answering, it plans here: it reads the stored
target (read-only) and the engine. It shows the next batch only; the reconciler re-plans after each
batch, from what the engine then holds. It shows the release state too (committed, applying, rolled back,
locked, and why), and plans the target the reconciler applies: the committed one while the stored one is
the rolled-back target, with the services an operator stopped held. `poll-now` goes through the local API.
"""
from __future__ import annotations

import json
import os
import sys
import time

from actors.api.client import ApiUnavailable, call_json
from actors.target import release as releases
from actors.target.engine.adapter import LOCK_FILE, LOCK_LABEL, DockerEngine, EngineError, lock_path
from actors.target.engine.worker import step_to_wire
from actors.target.holds import HOLDS_KEY
from actors.target.model import OrphanedVolumes, Step, describe_step, orphan_clock, orphaned_volumes, orphans_from_json
from actors.target.planner import explain, plan
from actors.target.policy import PolicyRefused, enforce_policy, on_this_host, policy_from_config
from actors.target.reconciler import ReconcilerSettings, target_to_plan
from conf.schema import parse
from messages.bus.target import ORPHANED_VOLUMES_KEY, RELEASE_KEY
from messages.protocol.target_state import InvalidTargetState, parse_target_state
from store import Store, StoreError


def register(subparsers, common) -> None:
    """Add the `plan` and `poll-now` commands; `common(parser)` adds the shared --config/--set options."""
    planner = subparsers.add_parser("plan", help="show the steps the reconciler would run now, with reasons")
    common(planner)
    planner.add_argument("--json", action="store_true", help="print JSON")
    poll = subparsers.add_parser("poll-now", help="ask the running agent to poll its target state at once")
    common(poll)


def dispatch(args, config: dict) -> int:
    if args.command == "plan":
        return show_plan(config, args.json)
    if args.command == "poll-now":
        return poll_now(config)
    raise ValueError(f"plan_cli does not handle {args.command!r}")


class PlanError(Exception):
    """The plan cannot be made; the text says why."""


def current_plan(config: dict) -> dict:
    """{etag, converged, steps: [...], services: [...]} for the stored target and the engine as it is now."""
    try:
        with Store.open(config["store"]["path"], readonly=True) as store:
            stored = store.load_target()
            since = orphans_from_json(store.get(ORPHANED_VOLUMES_KEY, {}))
            release = releases.release_from_json(store.get(RELEASE_KEY))
            holds = store.get(HOLDS_KEY)
    except StoreError as exc:
        raise PlanError(f"cannot read the agent's store: {exc}") from None
    if stored is None:
        return {"etag": None, "converged": False, "steps": [], "services": [],
                "note": "no target state has been received yet: the reconciler does nothing"}
    try:
        parsed = parse_target_state(stored.document)
        applied = releases.applied_target(release, releases.target_id(parsed))
        if applied == "committed":
            parsed = parse_target_state(release.committed_document or {})
        target = enforce_policy(parsed, policy_from_config(config, on_this_host))
        target = target_to_plan(target, holds, stored.etag, config["api"]["key_file"])
    except InvalidTargetState as exc:
        raise PlanError(f"the stored target state is invalid: {exc.reason}") from None
    except PolicyRefused as exc:
        raise PlanError(f"the stored target state is not applied: {exc.reason}") from None
    engine = DockerEngine(config["device"]["uuid"])
    try:
        current = engine.read_current()
    except EngineError as exc:
        raise PlanError(str(exc)) from None
    finally:
        engine.close()
    # The reconciler's volume clock, as it would see it now (a volume it has not seen orphaned yet starts now).
    entry = config.get("actors", {}).get("reconciler", {})
    grace = parse(ReconcilerSettings, entry.get("settings", {}), "actors.reconciler.settings").volume_grace
    now = time.time()
    orphans = OrphanedVolumes(now, grace, orphan_clock(since, orphaned_volumes(target, current), now))
    locked = releases.locked_apps(target, current, LOCK_LABEL, lambda app_id: os.path.exists(
        os.path.join(lock_path(config["update"]["lock_dir"], config["device"]["uuid"], app_id), LOCK_FILE)))
    steps, held = releases.defer_for_locks(plan(target, current, orphans=orphans), locked)
    services = explain(target, current, orphans=orphans)
    return {"etag": stored.etag, "converged": all(row["status"] == "converged" for row in services),
            "steps": [_step_json(step) for step in steps], "services": services,
            "deferred": [_step_json(step) for step in held],
            "release": {**releases.release_section(release, bool(held)), "applies": applied}}


def _step_json(step: Step) -> dict:
    wire = step_to_wire(step)  # flat: every step type has the same keys, None where it has no such argument
    return {"action": wire.action, "app_id": wire.app_id, "service_name": wire.service_name,
            "container_id": wire.container_id, "resource": wire.resource, "image": wire.image,
            "summary": describe_step(step), "reason": wire.reason}


def show_plan(config: dict, as_json: bool) -> int:
    try:
        result = _agent_plan(config)
        if result is None:
            result = current_plan(config)
    except (PlanError, ValueError) as exc:  # ValueError: device.uuid cannot be an owner label
        print(f"plan: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    if "note" in result:
        print(result["note"])
        return 0
    steps = result["steps"]
    print(_release_line(result["release"]))
    print(f"target {result['etag']}: " + ("converged, nothing to do" if result["converged"] else
                                          f"{len(steps)} step(s) would run now"))
    for step in steps:
        print(f"  {step['summary']}: {step['reason']}")
    for step in result["deferred"]:
        print(f"  deferred (update lock held): {step['summary']}: {step['reason']}")
    unsettled = [row for row in result["services"] if row["status"] != "converged"]
    if unsettled:
        print("services not converged:")
    for row in unsettled:
        name = "/".join(part for part in (row["app_id"], row["service_name"]) if part)
        print(f"  {name:<24} {row['status']:<9} {row['reason']}")
    return 0


def _release_line(release: dict) -> str:
    """"release: rolled_back; running "a"; target "b" failed (1/web): unhealthy: ...; applying the committed one"."""
    parts = [f"release: {release['status']}"]
    if release.get("running"):
        parts.append(f"running {release['running']}")
    if release.get("applying"):
        parts.append(f"applying {release['applying']}")
    if release.get("failed_target"):
        service = f" ({release['failed_service']})" if release.get("failed_service") else ""
        parts.append(f"target {release['failed_target']} failed{service}: {release.get('reason', '')}")
    if release["applies"] == "committed":
        parts.append("the committed release is applied")
    return "; ".join(parts)


def _agent_plan(config: dict) -> dict | None:
    """The running agent's plan; None when no agent answers (the plan is then made here)."""
    try:
        status, result = call_json(config, "GET", "/v1/plan")
    except ApiUnavailable:
        return None
    if status != 200 or not isinstance(result, dict):
        raise PlanError(result.get("error", status) if isinstance(result, dict) else f"the agent answered {status}")
    return result


def poll_now(config: dict) -> int:
    try:
        status, answer = call_json(config, "POST", "/v1/poll-now")
    except ApiUnavailable as exc:
        print(f"poll-now: {exc}", file=sys.stderr)
        return 1
    if status != 202:
        print(f"poll-now: the agent answered {status}: {answer}", file=sys.stderr)
        return 1
    print("the agent polls its target state now")
    return 0
