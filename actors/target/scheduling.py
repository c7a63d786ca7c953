"""The reconciler's generic loop, kept apart from the reconcile contract (the planner), all pure.

controller-runtime splits the same way: `Reconcile` decides, a work queue and a per-item rate limiter decide
*when*. Here `next_steps` filters the plan by what is already underway or backing off, `RetryTracker` is the
per-key rate limiter (`failed` on error, `forget` on success) and `JobPool` is the bookkeeping of the engine
jobs in flight. The reconciler actor only wires them to workers, timers and the bus.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, assert_never

from actors.target.model import (
    ACTIVE_STATUSES,
    ContainerStep,
    Create,
    EngineState,
    Key,
    OrphanedVolumes,
    Pull,
    RemoveImage,
    ResourceStep,
    Start,
    Step,
    Stop,
    containers_by_key,
)
from actors.target.planner import REMOVE_AT_ONCE, plan
from messages.protocol.target_state import TargetState

RESTART_REASON = "restart requested"


def next_steps(target: TargetState, current: EngineState, underway: Iterable[Step], backing_off: frozenset[Key],
               restarts: Mapping[Key, str], slots: int, orphans: OrphanedVolumes = REMOVE_AT_ONCE) -> list[Step]:
    """The steps to start now: restarts first, then the plan, at most `slots` of them, for services not
    backing off and with no step `underway` (running, or ended after `current` was read), and without what
    such a step is already doing (a pull, a network)."""
    underway = list(underway)
    excluded = backing_off | frozenset(step.key for step in underway)
    doing = {step_identity(step) for step in underway}
    steps = restart_steps(current, {key: phase for key, phase in restarts.items() if key not in excluded})
    steps += plan(target, current, excluded | frozenset(restarts), orphans)
    return [step for step in steps if step_identity(step) not in doing][:max(slots, 0)]


def step_identity(step: Step) -> tuple[object, ...]:
    """Equal for steps that do the same to the engine, whichever service they were planned for."""
    match step:
        case Pull() | RemoveImage():
            return step.action, step.image
        case ResourceStep():
            return step.action, step.app_id, step.resource
        case Create():
            return step.action, step.app_id, step.service_name, None
        case ContainerStep():
            return step.action, step.app_id, step.service_name, step.container_id
        case _:
            assert_never(step)


def restart_steps(current: EngineState, restarts: Mapping[Key, str]) -> list[Step]:
    """A restart is a stop of the service's running containers ("stop" phase), then a start ("start")."""
    by_key = containers_by_key(current.containers)
    steps: list[Step] = []
    for (app_id, service_name), phase in sorted(restarts.items()):
        containers = [] if service_name is None else by_key.get((app_id, service_name), [])
        active = [container for container in containers if container.status in ACTIVE_STATUSES]
        wanted, kind = (active, Stop) if phase == "stop" and active else (
            [c for c in containers if c.status in ("created", "exited")][:1], Start)
        steps += [kind(app_id, service_name, RESTART_REASON, container.id) for container in wanted]
    return steps


def finished_restarts(current: EngineState, restarts: Mapping[Key, str]) -> set[Key]:
    """Restarts with nothing left to do: no container (the plan creates it), or it runs again."""
    return {key for key, phase in restarts.items() if not restart_steps(current, {key: phase})}


def obsolete_pulls(target: TargetState, pulls: Mapping[int, str]) -> list[int]:
    """Jobs (id -> image) pulling an image that no service of the new target uses any more."""
    needed = {service.config.image for app in target.apps for service in app.services}
    return [job_id for job_id, image in pulls.items() if image not in needed]


def key_text(key: Key) -> str:
    """"app/service", or "app" for the app's housekeeping: how logs and recorded errors name a key."""
    return "/".join(part for part in key if part)


# -- the per-key rate limiter ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    count: int
    error: str
    retry_at: float  # monotonic seconds


class RetryTracker:
    """Failures per key, each retried after `delay(count)`; a key that failed `max_attempts` times or more is
    *marked* (shown as failed) until it is forgotten, and is still retried. The clock is passed in."""

    def __init__(self, delay: Callable[[int], float], max_attempts: int) -> None:
        self.delay = delay
        self.max_attempts = max_attempts
        self.failures: dict[Key, Failure] = {}
        self.marked: set[Key] = set()

    def failed(self, key: Key, error: str, now: float) -> Failure:
        """Count one more failure of `key` (controller-runtime's `AddRateLimited`)."""
        count = self.failures[key].count + 1 if key in self.failures else 1
        failure = self.failures[key] = Failure(count, error, now + self.delay(count))
        if count >= self.max_attempts:
            self.marked.add(key)
        return failure

    def forget(self, key: Key) -> bool:
        """Drop `key`'s failures (controller-runtime's `Forget`); True if it was marked, so its error is cleared."""
        self.failures.pop(key, None)
        if key in self.marked:
            self.marked.discard(key)
            return True
        return False

    def keys(self) -> list[Key]:
        """The failing keys, as a list: callers forget some while going through them."""
        return list(self.failures)

    def backing_off(self, now: float) -> frozenset[Key]:
        return frozenset(key for key, failure in self.failures.items() if failure.retry_at > now)

    def next_retry(self, keys: Iterable[Key]) -> float:
        """The earliest retry time of `keys` (all failing)."""
        return min(self.failures[key].retry_at for key in keys)

    def marked_errors(self) -> dict[Key, str]:
        """The last error of each marked key: what the report shows."""
        return {key: self.failures[key].error for key in self.marked}


# -- the job pool -----------------------------------------------------------------------------------------


@dataclass
class Job:
    step: Step | None  # None: a read
    address: object  # the worker's (opaque here)
    read_number: int = 0  # reads: their sequence number
    pid: int | None = None
    cancelled: bool = False
    aborted: str | None = None  # why the reconciler killed it (a stalled pull): its step's error
    progress: tuple[int, int, int] | None = None  # a pull's (downloaded, extracted, total) bytes, last reported
    moved_at: float = 0.0  # monotonic time the pull last moved (or started): the stall timeout counts from it


@dataclass
class JobPool:
    """The engine jobs in flight, by id. One read runs at a time (a read asked for meanwhile waits, and the
    waiting ones collapse into one). A step that ended is *unseen* by every read launched before it ended:
    its service gets no step planned from such a read, since the read may not show what the step did."""

    jobs: dict[int, Job] = field(default_factory=dict)
    last_id: int = 0
    reads_launched: int = 0
    read_wanted: bool = False
    ended: list[tuple[int, Step]] = field(default_factory=list)  # (reads launched then, step)

    def add(self, step: Step | None, address: object) -> int:
        """Register a launched job; its id."""
        self.last_id += 1
        job = Job(step, address)
        if step is None:
            self.reads_launched += 1
            job.read_number = self.reads_launched
        self.jobs[self.last_id] = job
        return self.last_id

    def pop(self, job_id: int) -> Job | None:
        return self.jobs.pop(job_id, None)

    def id_of(self, address: object) -> int | None:
        """The job run by the worker at `address` (compared with ==: thespian addresses are unhashable)."""
        return next((job_id for job_id, job in self.jobs.items() if job.address == address), None)

    def read_may_start(self) -> bool:
        """True if a read may be launched now; otherwise remember that one is wanted once the running one ends."""
        if any(job.step is None for job in self.jobs.values()):
            self.read_wanted = True
            return False
        return True

    def take_read_wanted(self) -> bool:
        """Whether a read was asked for while the last one ran (and clear it)."""
        wanted, self.read_wanted = self.read_wanted, False
        return wanted

    def step_ended(self, step: Step) -> None:
        self.ended.append((self.reads_launched, step))

    def unseen_by(self, read_number: int) -> list[Step]:
        """Steps that ended after read `read_number` was launched; older ones are forgotten."""
        self.ended = [(number, step) for number, step in self.ended if number >= read_number]
        return [step for _, step in self.ended]

    def running_steps(self) -> list[Step]:
        return [job.step for job in self.jobs.values() if job.step is not None]

    def pulls(self) -> dict[int, str]:
        """Job id -> image of the pulls in flight."""
        return {job_id: job.step.image for job_id, job in self.jobs.items() if isinstance(job.step, Pull)}

    def pids(self) -> list[int]:
        return [job.pid for job in self.jobs.values() if job.pid is not None]
