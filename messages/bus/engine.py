"""Messages of the container side: the reconciler and its short-lived engine workers, and what it announces.

Engine calls run in worker child actors (one per job), so a long pull or a hung engine never blocks the
reconciler, and a crash in the Docker SDK kills a worker, not the reconciler. A job carries everything the
worker needs, since a worker gets no Configure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from messages.codec import message
from messages.protocol.json import JSONObject
from messages.protocol.target_state import Service


@dataclass(frozen=True)
class EngineStep:
    """A planner step on the wire, one flat record for every step type: `action` (the enum's value) names the
    `actors.target.model` step type; the arguments that type does not have are None."""
    action: str
    app_id: str
    service_name: str | None
    reason: str
    service: Service | None
    container_id: str | None
    resource: str | None
    image: str | None


@message
@dataclass(frozen=True)
class RunEngineJob:
    """Reconciler -> worker: run `step`, or read the current state when `step` is None."""
    job_id: int
    owner: str
    timeout: float  # seconds for each engine API call
    stop_timeout: int  # seconds a stop waits before the engine kills the container
    step: EngineStep | None
    lock_dir: str = ""  # where the apps' update-lock directories are ("": none is mounted)


@message
@dataclass(frozen=True)
class EngineJobStarted:
    """Worker -> reconciler: the job runs in process `pid` (which the reconciler kills to cancel it)."""
    job_id: int
    pid: int


@message
@dataclass(frozen=True)
class EngineJobDone:
    """Worker -> reconciler: the outcome. `state` is the current state (wire form) of a read job."""
    job_id: int
    error: str | None
    unavailable: bool  # the engine could not be reached at all
    state: JSONObject | None


@message
@dataclass(frozen=True)
class ReconcileNow:
    """Re-read the engine and converge now (an operator, a benchmark, another actor)."""
    coalesce: ClassVar[tuple[str, ...]] = ()  # newer supersedes older (runtime.coalesce_key)
    reason: str


@message
@dataclass(frozen=True)
class ReconcilePassFinished:
    """The reconciler went idle: what a pass ran since it was triggered and whether the device converged.

    `converged` is False when a service is failing or waits on one; `failed` names them as "app/service".
    """
    trigger: str
    etag: str | None
    started_at: float
    finished_at: float
    steps: int
    converged: bool
    failed: tuple[str, ...]
