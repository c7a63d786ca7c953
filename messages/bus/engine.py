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
from messages.protocol.target_state import RegistryCredentials, Service


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


@dataclass(frozen=True)
class EngineOptions:
    """The reconciler's settings a worker needs (a worker gets no Configure)."""
    timeout: float  # seconds for each engine API call
    stop_timeout: int  # seconds a stop waits before the engine kills the container
    disk_reserve_mb: int  # a pull must leave this much free on the engine's data root
    log_max_size: str  # the `local` log driver's max-size of each container ("10m")
    log_max_files: int  # ... and its max-file
    certs_dir: str  # where dockerd finds each registry's CA (HOST:PORT/ca.crt): the preflight trusts the same
    lock_dir: str = ""  # where the apps' update-lock directories are ("": none is mounted)


@message
@dataclass(frozen=True)
class RunEngineJob:
    """Reconciler -> worker: run `step`, or read the current state when `step` is None. `login` is the
    target's login for the registry of a pull's image (never logged: its repr hides the password)."""
    job_id: int
    owner: str
    options: EngineOptions
    step: EngineStep | None
    login: RegistryCredentials | None


@message
@dataclass(frozen=True)
class PullProgressed:
    """Worker -> reconciler: a pull moved on (at most once a second): bytes downloaded and extracted of the
    layers it fetches, and the bytes it needs in all (0 while unknown)."""
    job_id: int
    downloaded: int
    extracted: int
    total: int


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
