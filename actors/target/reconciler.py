"""The reconciler: converges the Docker engine on the stored target state, level-triggered.

It reads the engine, plans (the pure planner), runs the planned steps in short-lived engine workers
(`actors.target.engine.worker`) and, whenever a step ends, reads the engine again and plans again, until the
plan is empty. It never blocks: engine calls run in the workers, so a long pull delays neither new
targets nor anything else; a newer target is planned at once and a pull it no longer needs is cancelled.

- A service with a step running, or with one that ended after the read being planned from started, gets
  no step; nor does an image or network that such a step is about: no step is repeated on an outdated
  view of the engine, and the other services go on meanwhile.
- A failed step is retried with per-service exponential backoff; after `max_attempts` failures the
  service is marked failed (recorded for status, shown in the report) and still retried at the backoff
  cap, while the rest of the device converges.
- The engine out of reach is a known state, not a crash: the reconciler records "engine unreachable" (status
  and the report say so), stops launching steps, and probes the engine with a read at a short capped
  backoff (`probe_min` .. `probe_max`, 0.5 .. 5 s), so it converges within seconds of the engine's return.
  Crashing instead would burn the restart intensity on an outage and leave the reconciler cooling down
  long after the engine is back (measured: 48.7 s). A step cut short by the outage is not a failure of
  its service: it is planned again from the first read after the engine returns.
- A drift check re-reads the engine on a timer: a container removed or stopped by hand comes back.
- Restarts asked for (RestartServices, via persistence: RestartsRecorded) are in the store until carried out
  (stopped and started again, recreated, or gone from the target; then ServicesRestarted), so neither a
  crash nor a new target forgets one: the configuration file holds the new values, so the service must not
  keep running the old ones. At least once: a crash just after a restart may restart the service again.
- The device owner's policy (`policy`) is checked again whenever the stored target is loaded: one stored
  before the policy changed, that breaks it now, is not applied. The reconciler keeps the target it had in
  force (none after a restart: it then starts, stops and removes nothing) and records why, until a target
  that complies arrives; ports without an address get the policy's bind address, so changing it recreates
  the containers concerned.
- A target is applied as a release (`release`, pure; `[update]`): committed once every service is ready and
  has settled, rolled back to the committed release when it fails, never applied again after a rollback
  until a different target arrives. The release state is sent to persistence on every change and read back
  on start, so a restart resumes the update where it stood; the engine is read every `release_tick` while a
  release is underway, and while a service waits for a dependency to be healthy (`depends_on` service_healthy).
  A running container of an app holding its update lock defers the app's stops.
- Thin shell: planning is `planner`, what starts when is `scheduling` (job pool, per-key retries), the
  report is `report`; this actor wires them to workers, timers and the bus. Every log line of a pass
  carries its number ("pass 7: ..."), so one pass can be followed through interleaved logs.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field
from functools import partial

import messages
from actors.api.keys import grant_keys, operator_key, opted_in
from actors.runtime.base import FleetletActor
from actors.runtime.logformat import context
from actors.target import release as releases
from actors.target.engine.adapter import LOCK_FILE, LOCK_LABEL, OWNER_PATTERN, EngineError, lock_path
from actors.target.engine.worker import state_from_wire, step_to_wire
from actors.target.holds import HOLDS_KEY, apply_holds, holds_in_force
from actors.target.images import ImageLedger, images_to_keep, images_to_remove, ledger_from_json, ledger_to_json
from actors.target.model import (
    EngineState,
    Key,
    OrphanedVolumes,
    Pull,
    RemoveImage,
    Resource,
    Step,
    describe_step,
    orphan_clock,
    orphaned_volumes,
    orphans_from_json,
    orphans_to_json,
)
from actors.target.planner import VerdictRow, explain, waits_for_health
from actors.target.policy import POLICY_USES, PolicyRefused, enforce_policy, on_this_host, policy_from_config
from actors.target.report import PullFigures, report_state, with_progress
from actors.target.scheduling import (
    RESTART_REASON,
    Job,
    JobPool,
    RetryTracker,
    finished_restarts,
    key_text,
    next_steps,
    obsolete_pulls,
)
from conf.schema import ConfigError, non_empty, non_negative, positive, setting
from messages.bus.engine import (
    EngineJobDone,
    EngineJobStarted,
    EngineOptions,
    PullProgressed,
    ReconcileNow,
    ReconcilePassFinished,
    RunEngineJob,
)
from messages.bus.outbox import ClearError, RecordError
from messages.bus.target import (
    IMAGE_LEDGER_KEY,
    ORPHANED_VOLUMES_KEY,
    RELEASE_KEY,
    CurrentStateObserved,
    HoldsRecorded,
    ImageLedgerChanged,
    OrphanedVolumesSeen,
    ReleaseChanged,
    RestartsRecorded,
    ServicesRestarted,
    TargetStateStored,
)
from messages.protocol.target_state import (
    InvalidTargetState,
    TargetState,
    credentials_for,
    parse_target_state,
    to_json,
)
from messages.transport.backoff import backoff_delay
from store import Store


def size_text(value: str) -> str | None:
    """A size as the engine's log options spell it: digits and a unit k, m or g."""
    return None if re.fullmatch(r"[1-9][0-9]{0,8}[kmg]", value) else f"must be like 10m or 512k, got {value!r}"


@dataclass(frozen=True)
class ReconcilerSettings:
    max_parallel: int = setting(4, rule=positive)  # engine steps running at once
    drift_interval: float = setting(30.0, rule=positive)  # seconds between drift checks (re-read and converge)
    retry_base: float = setting(2.0, rule=positive)  # a failed service is retried after this, doubling up to retry_max
    retry_max: float = setting(300.0, rule=positive)
    max_attempts: int = setting(3, rule=positive)  # failures after which a service is marked failed (still retried)
    engine_timeout: float = setting(30.0, rule=positive)  # seconds for one engine API call
    stop_timeout: int = setting(10, rule=non_negative)  # seconds a container gets to stop before it is killed
    volume_grace: float = setting(86400.0, rule=non_negative)  # seconds an app's volumes outlive the app
    probe_min: float = setting(0.5, rule=positive)  # engine unreachable: probe after this, doubling up to probe_max
    probe_max: float = setting(5.0, rule=positive)
    release_tick: float = setting(1.0, rule=positive)  # seconds between reads while a release (or health) is awaited
    pull_stall_timeout: float = setting(60.0, rule=positive)  # a pull that moves no byte this long is aborted, retried
    disk_reserve_mb: int = setting(256, rule=non_negative)  # a pull must leave this much free on the engine's disk
    log_max_size: str = setting("10m", rule=size_text)  # each container's `local` log file size ("10m", "512k")
    log_max_files: int = setting(3, rule=positive)  # ... and how many of them it keeps
    registry_certs_dir: str = setting("/etc/docker/certs.d", rule=non_empty)  # the registries' CAs, as dockerd's



def target_to_plan(target: TargetState, holds: object, etag: str | None, key_file: str) -> TargetState:
    """What the reconciler converges on: the target in force, with the services held stopped through the local
    API set to ``running: false`` and the API keys in the environment of the services that asked for one."""
    target = apply_holds(target, holds_in_force(holds, etag))
    return grant_keys(target, operator_key(key_file, create=True)) if opted_in(target) else target


def retry_delay(settings: ReconcilerSettings, count: int) -> float:
    """Seconds before retrying a service after `count` failures: the backoff's ceiling, no jitter, since the
    engine is local and there is no herd to spread."""
    return backoff_delay(count, settings.retry_base, settings.retry_max)


def probe_delay(settings: ReconcilerSettings, probes: int) -> float:
    """Seconds before the next read of an unreachable engine, after `probes` failed ones: short and capped,
    since the engine is local and its return should be noticed at once."""
    return backoff_delay(probes, settings.probe_min, settings.probe_max)


@dataclass(frozen=True)
class DriftCheck:
    """Timer payload: re-read the engine and converge (re-armed each time it fires)."""


@dataclass(frozen=True)
class RetryDue:
    """Timer payload: the earliest backoff of a failing service is over."""


@dataclass(frozen=True)
class ReleaseTick:
    """Timer payload: read the engine again to judge the release underway, or a health awaited."""


@dataclass(frozen=True)
class EngineProbe:
    """Timer payload: read the unreachable engine again."""


@dataclass(frozen=True)
class StallCheck:
    """Timer payload: abort the pulls that have not moved for pull_stall_timeout (armed while pulls run)."""


@dataclass
class Pass:
    """From a trigger (new target, drift check, retry...) until the reconciler is idle again."""
    number: int  # on every log line of the pass (controller-runtime's reconcileID)
    trigger: str
    started_at: float = field(default_factory=time.time)
    steps: int = 0
    cleaned: bool = False  # the cleanup after convergence ran in this pass (at most once: a failure waits a pass)


class Reconciler(FleetletActor):
    Settings = ReconcilerSettings
    uses = ("device.uuid", "store", "update", "api.key_file", *POLICY_USES)
    options: ReconcilerSettings
    # Set in started(). stopping() and crash() may come before it: they use `pool` (made with the actor) and
    # close `store` only once opened.
    owner: str
    store: Store
    target: TargetState | None  # None until a target is stored
    etag: str | None
    current: EngineState | None  # None until the first read is back
    retries: RetryTracker
    restarts: dict[Key, str]
    retry_timer_at: float | None
    engine_error_cleared: bool
    engine_down: str | None  # why the engine is unreachable, None while it answers
    probes: int  # failed reads since it became unreachable
    last_report: dict[str, object] | None  # the last CurrentStateObserved: apps, engine
    last_report_at: float
    passes: int
    pass_: Pass | None
    orphans_since: dict[Resource, float]  # when each volume of an app that left the target was first seen so
    rules: releases.Rules
    release: releases.Release
    stored_id: str | None  # target_id of the stored target (None until one is stored)
    stored_document: dict | None  # its canonical document
    lock_since: dict[str, float]  # since when each app has held its update lock
    crash_since: dict[str, float]  # since when each crash-looping container (by id) has been seen so
    tick_armed: bool
    lock_dir: str  # update.lock_dir

    def __init__(self) -> None:
        super().__init__()
        self.pool = JobPool()

    @classmethod
    def check_config(cls, config: dict) -> None:
        owner = config["device"]["uuid"]
        if not OWNER_PATTERN.fullmatch(owner):
            raise ConfigError(f"device.uuid {owner!r} cannot label containers: it must match {OWNER_PATTERN.pattern}")

    def started(self) -> None:
        self.owner = self.config["device"]["uuid"]
        self.policy = policy_from_config(self.config, on_this_host)
        self.store = Store.open(self.config["store"]["path"], readonly=True)
        self.target = None
        self.etag = None
        self.current = None
        self.pool = JobPool()
        self.retries = RetryTracker(partial(retry_delay, self.options), self.options.max_attempts)
        self.restarts = {(r.app_id, r.service_name): "stop" for r in self.store.pending_restarts()}
        self.retry_timer_at = None
        self.engine_error_cleared = False
        self.engine_down = None
        self.probes = 0
        self.last_report = None
        self.last_report_at = 0.0
        self.passes = 0
        self.pass_ = None
        self.orphans_since = orphans_from_json(self.store.get(ORPHANED_VOLUMES_KEY, {}))
        update = self.config["update"]
        self.rules = releases.Rules(update["settle_seconds"], update["timeout"], update["max_attempts"],
                                    update["lock_timeout"], self.options.retry_base, self.options.retry_max)
        self.lock_dir = update["lock_dir"]
        self.release = releases.release_from_json(self.store.get(RELEASE_KEY))
        self._set_release(releases.resumed(self.release, time.time()))
        self.stored_id = None
        self.stored_document = None
        self.lock_since = {}
        self.crash_since = {}
        self.tick_armed = False
        self.ledger = ledger_from_json(self.store.get(IMAGE_LEDGER_KEY, {}))
        self.stall_timer = False
        self._load_target()
        self.after(self.options.drift_interval, DriftCheck())
        self._trigger("start")

    def stopping(self) -> None:
        self._kill_workers()
        if "store" in vars(self):  # opened by started()
            self.store.close()

    def crash(self, exc: BaseException) -> None:
        # An exiting actor waits for its children: end the workers so the restart is not delayed by them.
        self._kill_workers()
        super().crash(exc)

    def _log(self, level: int, text: str, *args: object) -> None:
        """Log, prefixed with the number of the pass underway (if any)."""
        if self.pass_ is not None:
            text, args = "pass %d: " + text, (self.pass_.number, *args)
        self.log.log(level, text, *args, extra=context(self.pass_.number if self.pass_ else None, self.etag))

    # -- triggers -----------------------------------------------------------------------------------

    def on_TargetStateStored(self, msg: TargetStateStored) -> None:
        self._begin_pass("new target")
        if (target := self._load_target()) is not None:
            for job_id in obsolete_pulls(target, self.pool.pulls()):
                self._cancel(job_id)
            for key in self.retries.keys():
                self._forget_failure(key)
        self._request_read()

    def on_HoldsRecorded(self, msg: HoldsRecorded) -> None:
        """A service was stopped or started through the local API: the target planned for changed."""
        self._begin_pass("held services changed")
        self._load_target()
        self._request_read()

    def on_ReconcileNow(self, msg: ReconcileNow) -> None:
        self._trigger(msg.reason)

    def on_RestartsRecorded(self, msg: RestartsRecorded) -> None:
        self._begin_pass("restart services")
        self._log(logging.INFO, "restarting %s of app %s: %s", ", ".join(msg.services), msg.app_id, msg.reason)
        app = None if self.target is None else self.target.app(msg.app_id)
        for service_name in msg.services:
            if app is None or app.service(service_name) is None:
                self._log(logging.WARNING, "cannot restart %s/%s: not in the target state", msg.app_id,
                           service_name)
                self.publish(ServicesRestarted(msg.app_id, service_name))  # nothing to carry out: forget it
                continue
            self.restarts[msg.app_id, service_name] = "stop"
            self._forget_failure((msg.app_id, service_name))
        self._request_read()

    def on_timer(self, payload: object) -> None:
        match payload:
            case DriftCheck():
                self.after(self.options.drift_interval, DriftCheck())
                self._trigger("drift check")
            case RetryDue():
                self.retry_timer_at = None
                self._trigger("retry")
            case EngineProbe():
                self._begin_pass("engine probe")
                self._request_read(probe=True)
            case ReleaseTick():
                self.tick_armed = False
                self._trigger("release check")
            case StallCheck():
                self.stall_timer = False
                self._abort_stalled_pulls()

    def _trigger(self, reason: str) -> None:
        self._begin_pass(reason)
        self._request_read()

    def _begin_pass(self, reason: str) -> None:
        """A trigger while a pass is underway joins it (the pass keeps its first trigger)."""
        if self.pass_ is None:
            self.passes += 1
            self.pass_ = Pass(self.passes, reason)

    def _load_target(self) -> TargetState | None:
        """Take the stored target as a release (or the committed one, if the stored one was rolled back); the
        target to apply if it differs from the one in force, else None."""
        stored = self.store.load_target()
        if stored is None:
            return None
        try:
            parsed = parse_target_state(stored.document)
            tid = releases.target_id(parsed)
            if tid != self.stored_id:
                self.stored_id, self.stored_document = tid, to_json(parsed)
                self._set_release(releases.on_target(self.release, tid, stored.etag, time.time()))
            target = enforce_policy(self._applied(parsed), self.policy)
            target = target_to_plan(target, self.store.get(HOLDS_KEY), stored.etag, self.config["api"]["key_file"])
        except InvalidTargetState as exc:  # persistence stores only validated documents: a bug, keep the old one
            self._log(logging.ERROR, "the stored target state %s is invalid: %s", stored.etag, exc.reason)
            self.publish(RecordError("reconciler", "target", f"stored target is invalid: {exc.reason}", time.time()))
            return None
        except PolicyRefused as exc:  # stored before the policy changed
            self._log(logging.ERROR, "the stored target state %s is not applied: %s", stored.etag, exc.reason)
            self.publish(RecordError("reconciler", "target", f"stored target is not applied: {exc.reason}",
                                     time.time()))
            return None
        changed = target != self.target
        self.target, self.etag = target, stored.etag
        return target if changed else None

    def _applied(self, stored: TargetState) -> TargetState:
        """The stored target, or the committed one while the stored one is the rolled-back target."""
        if self.stored_id is not None and releases.applied_target(self.release, self.stored_id) == "committed":
            return parse_target_state(self.release.committed_document or {})
        return stored

    def _set_release(self, release: releases.Release) -> None:
        """Persistence first keeps it, so a restart resumes the update from it."""
        if release != self.release:
            self.publish(ReleaseChanged(releases.release_to_json(release)))
            self.release = release

    # -- jobs ---------------------------------------------------------------------------------------

    def _launch(self, step: Step | None) -> None:
        address = self.createActor("actors.target.engine.worker.EngineWorker")
        job_id = self.pool.add(step, address)
        options = self.options
        engine_options = EngineOptions(options.engine_timeout, options.stop_timeout, options.disk_reserve_mb,
                                       options.log_max_size, options.log_max_files, options.registry_certs_dir,
                                       self.lock_dir)
        login = None
        if isinstance(step, Pull):
            login = None if self.target is None else credentials_for(self.target, step.image)
            self.pool.jobs[job_id].moved_at = time.monotonic()
            self._arm_stall_check()
        self.send(address, messages.encode(RunEngineJob(job_id, self.owner, engine_options,
                                                     None if step is None else step_to_wire(step), login)))

    # -- pulls ---------------------------------------------------------------------------------------

    def on_PullProgressed(self, msg: PullProgressed) -> None:
        job = self.pool.jobs.get(msg.job_id)
        if job is None:
            return
        figures = (msg.downloaded, msg.extracted, msg.total)
        if job.progress is None or figures[:2] != job.progress[:2]:  # bytes moved: not stalled
            job.moved_at = time.monotonic()
        job.progress = figures
        if self.last_report is not None:
            self._report(with_progress(self.last_report, self._pull_figures()))

    def _pull_figures(self) -> dict[Key, PullFigures]:
        return {job.step.key: job.progress for job in self.pool.jobs.values()
                if isinstance(job.step, Pull) and job.progress is not None}

    def _arm_stall_check(self) -> None:
        if not self.stall_timer:
            self.stall_timer = True
            self.after(max(0.2, self.options.pull_stall_timeout / 4), StallCheck())

    def _abort_stalled_pulls(self) -> None:
        """Kill the worker of each pull that moved nothing for pull_stall_timeout: the engine drops a pull whose
        client went away, and the service's backoff retries it."""
        now, limit = time.monotonic(), self.options.pull_stall_timeout
        pulls = [job for job in self.pool.jobs.values() if isinstance(job.step, Pull)]
        for job in pulls:
            if job.aborted is None and now - job.moved_at >= limit and job.pid is not None:
                job.aborted = f"pull stalled: no progress for {limit:g} s"
                self._log(logging.WARNING, "aborting %s: %s", describe_step(job.step) if job.step else "", job.aborted)
                _kill(job.pid)
        if pulls:
            self._arm_stall_check()

    def _request_read(self, probe: bool = False) -> None:
        if self.engine_down is not None and not probe:
            return  # the probe timer reads next; triggers meanwhile change nothing the read will not see
        if self.pool.read_may_start():  # one read at a time; the next starts when it is back
            self._launch(None)

    def _cancel(self, job_id: int) -> None:
        job = self.pool.jobs[job_id]
        job.cancelled = True
        what = "the read" if job.step is None else describe_step(job.step)  # only pulls are cancelled
        self._log(logging.INFO, "cancelling %s: the new target does not need it", what)
        if job.pid is not None:
            _kill(job.pid)

    def _kill_workers(self) -> None:
        for pid in self.pool.pids():
            _kill(pid)

    def on_EngineJobStarted(self, msg: EngineJobStarted) -> None:
        job = self.pool.jobs.get(msg.job_id)
        if job is not None:
            job.pid = msg.pid
            if job.cancelled:
                _kill(msg.pid)

    def on_EngineJobDone(self, msg: EngineJobDone) -> None:
        job = self.pool.pop(msg.job_id)
        if job is None:
            return
        if msg.unavailable:
            if job.step is not None:
                self.pool.step_ended(job.step)  # cut short by the outage: planned again after it
            self._engine_unreachable(msg.error or "the engine is unavailable")  # the worker always says why
            return
        if job.step is None:
            if msg.error or msg.state is None:  # a read that did not fail has a state
                raise EngineError(None, f"cannot read the engine: {msg.error}")
            self._read_done(job, state_from_wire(msg.state))
        else:
            self._step_done(job.step, msg.error)

    def on_child_exited(self, address: object) -> None:
        job_id = self.pool.id_of(address)
        job = None if job_id is None else self.pool.pop(job_id)
        if job is None:
            return  # it answered before exiting
        if job.step is None:
            raise EngineError(None, "the engine worker reading the state died")
        died = None if job.cancelled else "the engine worker died without an answer"
        self._step_done(job.step, job.aborted or died)

    def _step_done(self, step: Step, error: str | None) -> None:
        self.pool.step_ended(step)
        self.figures.count("fleetlet_steps", action=step_to_wire(step).action, outcome="failed" if error else "ok")
        if self.pass_ is not None:
            self.pass_.steps += 1
        if error:
            self._failed(step.key, error)
        elif step.key in self.restarts and step.reason == RESTART_REASON:
            self.restarts[step.key] = "start"
        elif isinstance(step, Pull):
            self._set_ledger(self.ledger.with_pull(step.image))
        elif isinstance(step, RemoveImage):
            self._set_ledger(self.ledger.without(step.image))
        self._request_read()

    def _set_ledger(self, ledger: ImageLedger) -> None:
        if ledger != self.ledger:
            self.ledger = ledger
            self.publish(ImageLedgerChanged(ledger_to_json(ledger)))

    def _failed(self, key: Key, error: str) -> None:
        failure = self.retries.failed(key, error, time.monotonic())
        self._log(logging.WARNING, "%s failed (%d): %s", key_text(key), failure.count, error)
        if key in self.retries.marked:
            self.publish(RecordError("reconciler", key_text(key),
                                     f"{error} (failed {failure.count} times, still retrying)", time.time()))

    def _forget_failure(self, key: Key) -> None:
        if self.retries.forget(key):
            self.publish(ClearError("reconciler", key_text(key)))

    def _engine_unreachable(self, error: str) -> None:
        """Record the outage once, say it in the report, and probe again after a short capped backoff."""
        if self.engine_down is None:
            self._log(logging.WARNING, "the engine is unreachable, probing it: %s", error)
            self.publish(RecordError("reconciler", "engine", f"engine unreachable: {error}", time.time()))
            self.engine_error_cleared = False
            self.engine_down = error
            self._report({**(self.last_report or {}), "engine": {"status": "unreachable", "reason": error[:300]}})
        self.probes += 1
        if not self.pool.jobs:  # the pass cannot go on; the probe that finds the engine back starts the next
            self.pass_ = None
        self.after(probe_delay(self.options, self.probes), EngineProbe())

    # -- the loop -----------------------------------------------------------------------------------

    def _read_done(self, job: Job, current: EngineState) -> None:
        self.current = current
        if self.engine_down is not None:
            self._log(logging.INFO, "the engine answers again after %d probes", self.probes)
            self.engine_down, self.probes = None, 0
        if not self.engine_error_cleared:
            self.publish(ClearError("reconciler", "engine"))
            self.engine_error_cleared = True
        if self.pool.take_read_wanted():
            self._launch(None)
        self._act(current, self.pool.unseen_by(job.read_number))

    def _act(self, current: EngineState, unseen: list[Step]) -> None:
        """Start what the plan says now, from `current` (the last read); `unseen`: steps that ended after it."""
        running = self.pool.running_steps()
        backing_off = self.retries.backing_off(time.monotonic())
        excluded = frozenset(step.key for step in running + unseen) | backing_off
        target = self.target if self.target is not None else TargetState()
        for key in finished_restarts(current, self.restarts) - excluded:
            del self.restarts[key]
            self.publish(ServicesRestarted(key[0], key[1] or ""))
        steps, held, verdicts = self._plan(target, current, running, unseen, backing_off, excluded)
        if self._judge_release(target, current, verdicts, bool(held), bool(running or unseen)):
            target = self.target or target  # rolled back: the committed release, planned at once
            steps, held, verdicts = self._plan(target, current, running, unseen, backing_off, excluded)
        for step in held:
            self._log(logging.INFO, "deferred %s: app %s holds its update lock", describe_step(step), step.app_id)
        for step in steps:
            self._log(logging.INFO, "%s %s: %s", step.action.value, key_text(step.key), step.reason)
            self._launch(step)
        for row in verdicts:
            if row["status"] == "converged":
                self._forget_failure((row["app_id"], row["service_name"]))
        shown = {(row["app_id"], row["service_name"]) for row in verdicts}
        for key in [key for key in self.retries.keys() if key not in shown and key not in excluded]:
            self._forget_failure(key)  # its service is gone from the target and the engine
        self._report(with_progress({**self._release_report(report_state(target, current, verdicts,
                                                                        self.retries.marked_errors(),
                                                                        running + steps), current,
                                                           frozenset(step.app_id for step in held)),
                                    "engine": {"status": "ok"}}, self._pull_figures()))
        if (self.release.applying is not None or waits_for_health(verdicts)) and not self.tick_armed:
            self.tick_armed = True
            self.after(self.options.release_tick, ReleaseTick())
        if not self.pool.jobs and self.pass_ is not None and not self.pass_.cleaned and self._converged(verdicts):
            self.pass_.cleaned = True
            self._clean_up(current)
        if not self.pool.jobs:
            self._idle(verdicts, backing_off)

    def _plan(self, target: TargetState, current: EngineState, running: list[Step], unseen: list[Step],
              backing_off: frozenset[Key], excluded: frozenset[Key]
              ) -> tuple[list[Step], list[Step], list[VerdictRow]]:
        """(steps to start, steps an update lock defers, verdicts) for `target` now."""
        orphans = self._orphans(target, current)
        now = time.time()
        self.lock_since = releases.lock_clock(self.lock_since, releases.locked_apps(
            target, current, LOCK_LABEL, self._lock_held), now)
        deferred = releases.deferred(target, self.lock_since, now, self.rules)
        steps, held = releases.defer_for_locks([] if self.target is None else next_steps(
            target, current, running + unseen, backing_off, self.restarts,
            self.options.max_parallel, orphans), deferred)
        verdicts = [] if self.target is None else explain(target, current, excluded, orphans)
        return steps[:max(self.options.max_parallel - len(running), 0)], held, verdicts

    def _lock_held(self, app_id: str) -> bool:
        return os.path.exists(os.path.join(lock_path(self.lock_dir, self.owner, app_id), LOCK_FILE))

    def _judge_release(self, target: TargetState, current: EngineState, verdicts: list[VerdictRow], locked: bool,
                       busy: bool) -> bool:
        """Feed the release the engine's view; True when the target to apply changed (a rollback)."""
        if self.stored_id is None or self.stored_document is None or self.release.applying != self.stored_id:
            return False
        converged = not busy and all(row["status"] == "converged" for row in verdicts)  # no step left to run
        restarting = any(key[0] in {app.app_id for app in target.apps} for key in self.restarts)
        readiness = releases.readiness(target, current, converged)
        if restarting and readiness.failure:  # a retry's restart underway: judged once it is done
            readiness = releases.Readiness(False, waiting="restarting")
        release, outcome = releases.on_observation(self.release, self.stored_id, self.stored_document, readiness,
                                                   time.time(), self.rules, locked)
        self._set_release(release)
        match outcome.event:
            case "committed":
                self._log(logging.INFO, "release %s committed", release.committed_etag or release.committed)
                self.publish(ClearError("reconciler", "release"))
            case "retry":
                self._log(logging.WARNING, "release %s: retrying: %s", self.etag, release.reason)
                for key in outcome.restart:
                    self.restarts[key] = "stop"
            case releases.ROLLED_BACK | releases.FAILED:
                self._log(logging.WARNING, "release %s %s: %s", release.failed_etag or release.failed_target,
                          "rolled back" if outcome.event == releases.ROLLED_BACK else "failed", release.reason)
                self.publish(RecordError("reconciler", "release", f"target {release.failed_etag} "
                                         f"{outcome.event.replace('_', ' ')}: {release.reason}"[:500], time.time()))
        if outcome.event != releases.ROLLED_BACK:
            return False
        try:
            self.target = enforce_policy(self._applied(target), self.policy)
        except PolicyRefused as exc:  # the committed release breaks a newer policy: leave the containers be
            self._log(logging.ERROR, "the committed release is not applied: %s", exc.reason)
            self.publish(RecordError("reconciler", "target", f"committed release is not applied: {exc.reason}",
                                     time.time()))
            self.target = None
        return True

    def _release_report(self, report: dict, current: EngineState, locked: frozenset[str]) -> dict:
        """The report with the release's status per app, its `release` section, and crash loops."""
        self.crash_since = releases.crash_loops(current, self.crash_since, time.time())
        by_id = {container.id: container for container in current.containers}
        for app_id, app in report["apps"].items():
            app["update_status"] = releases.app_status(self.release, app["update_status"], app_id in locked)
            for row in app["services"].values():
                if (container_id := row.get("containerId")) in self.crash_since:
                    row.update(releases.crash_loop_row(by_id[container_id], self.crash_since[container_id]))
        return {**report, "release": releases.release_section(self.release, bool(locked))}

    def _converged(self, verdicts: list[VerdictRow]) -> bool:
        return self.target is not None and all(row["status"] == "converged" for row in verdicts)

    def _clean_up(self, current: EngineState) -> None:
        """The target in force is fully applied: it becomes the last applied, and the images Fleetlet pulled that
        neither it, nor the committed release (a rollback needs them), nor the one applied before it uses (and
        no container uses) are removed."""
        if self.target is None:
            return
        rolled_back = self.stored_id is not None and \
            releases.applied_target(self.release, self.stored_id) == "committed"
        in_force = self.release.committed_etag if rolled_back else self.etag
        self._set_ledger(self.ledger.with_applied(in_force, to_json(self.target)))
        kept = self.ledger.previous_releases()
        if self.release.committed_document is not None:
            kept.append(parse_target_state(self.release.committed_document))
        keep = images_to_keep(self.target, kept)
        for image in images_to_remove(self.ledger.pulled, keep, current):
            self._log(logging.INFO, "removing image %s: pulled by Fleetlet, used by neither this release, the "
                      "committed one nor the one before", image)
            self._launch(RemoveImage("", None, "image no longer used", image))

    def _orphans(self, target: TargetState, current: EngineState) -> OrphanedVolumes:
        """The volume clock for this plan; a change goes to persistence first, so a restart keeps it."""
        now = time.time()  # wall clock: the grace outlives restarts and reboots
        since = orphan_clock(self.orphans_since, orphaned_volumes(target, current), now)
        if since != self.orphans_since:
            self.publish(OrphanedVolumesSeen(orphans_to_json(since)))
            self.orphans_since = since
        return OrphanedVolumes(now, self.options.volume_grace, since)

    def _report(self, state: dict[str, object]) -> None:
        # Re-sent after a drift interval even when equal, so a restarted reporter learns it again.
        if state != self.last_report or time.monotonic() - self.last_report_at >= self.options.drift_interval:
            self.publish(CurrentStateObserved(state, time.time()))
            self.last_report, self.last_report_at = state, time.monotonic()

    def _idle(self, verdicts: list[VerdictRow], backing_off: frozenset[Key]) -> None:
        if backing_off:
            retry_at = self.retries.next_retry(backing_off)
            if self.retry_timer_at is None or retry_at < self.retry_timer_at:
                self.retry_timer_at = retry_at
                self.after(retry_at - time.monotonic(), RetryDue())
        if self.pass_ is None:
            return
        converged = self._converged(verdicts)
        failed = tuple(sorted(key_text(key) for key in self.retries.marked))
        finished = time.time()
        done = self.pass_
        if done.steps:
            self._log(logging.INFO, "%s after %s: %d steps in %.2f s%s", "converged" if converged else "idle",
                       done.trigger, done.steps, finished - done.started_at,
                       f"; failed: {', '.join(failed)}" if failed else "")
        self.pass_ = None
        self.figures.observe("fleetlet_reconcile_pass_seconds", finished - done.started_at)
        self.publish(ReconcilePassFinished(done.trigger, self.etag, done.started_at, finished, done.steps, converged,
                                   failed))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
