"""Engine workers: one short-lived child actor of the reconciler per engine job (a step, or a read).

The worker answers its parent with EngineJobStarted (its pid, so the reconciler can cancel a superseded
pull by killing it), runs the job with a Docker client created in its own process (a pull also sends
PullProgressed), answers with EngineJobDone and exits. Whatever the SDK does (hang, raise, crash) stays in this process.
"""
from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass

from thespian.actors import ActorAddress, ActorExitRequest

import messages
from actors.runtime.base import FleetletActor
from actors.target.engine.adapter import DockerEngine, EngineError, EngineUnavailable, ProgressCallback
from actors.target.engine.pull_progress import PullState
from actors.target.model import STEP_TYPES, Action, ContainerInfo, EngineState, Resource, Step
from messages.bus.engine import EngineJobDone, EngineJobStarted, EngineStep, PullProgressed, RunEngineJob

# -- wire forms (the codec carries neither enums nor sets) -------------------------------------------------


def step_to_wire(step: Step) -> EngineStep:
    """The step's own fields, the action as its value, every other argument None."""
    return EngineStep(**{**{field.name: None for field in dataclasses.fields(EngineStep)},
                         **{field.name: getattr(step, field.name) for field in dataclasses.fields(step)},
                         "action": step.action.value})


def step_from_wire(step: EngineStep) -> Step:
    kind = STEP_TYPES[Action(step.action)]
    return kind(**{field.name: getattr(step, field.name) for field in dataclasses.fields(kind)})


def state_to_wire(state: EngineState) -> dict:
    return {
        "containers": [{**{field.name: getattr(container, field.name) for field in dataclasses.fields(ContainerInfo)},
                        "networks": sorted(container.networks),
                        "field_hashes": [list(pair) for pair in container.field_hashes]}
                       for container in state.containers],
        "images": sorted(state.images),
        "images_in_use": sorted(state.images_in_use),
        "networks": [[resource.app_id, resource.name] for resource in sorted(state.networks)],
        "volumes": [[resource.app_id, resource.name] for resource in sorted(state.volumes)],
    }


def state_from_wire(wire: dict) -> EngineState:
    return EngineState(
        containers=tuple(ContainerInfo(**{**container, "networks": frozenset(container["networks"]),
                                          "field_hashes": tuple(tuple(pair) for pair in container["field_hashes"])})
                         for container in wire["containers"]),
        images=frozenset(wire["images"]),
        images_in_use=frozenset(wire["images_in_use"]),
        networks=frozenset(Resource(*pair) for pair in wire["networks"]),
        volumes=frozenset(Resource(*pair) for pair in wire["volumes"]),
    )


def run_job(job: RunEngineJob, engine: DockerEngine, progress: ProgressCallback | None = None) -> EngineJobDone:
    """Run one job against `engine`; every failure becomes an answer, never an exception."""
    try:
        if job.step is None:
            return EngineJobDone(job.job_id, None, False, state_to_wire(engine.read_current()))
        engine.execute(step_from_wire(job.step), job.login, progress)
        return EngineJobDone(job.job_id, None, False, None)
    except EngineUnavailable as exc:
        return EngineJobDone(job.job_id, str(exc), True, None)
    except EngineError as exc:
        return EngineJobDone(job.job_id, str(exc), False, None)
    except Exception as exc:  # noqa: BLE001 - an SDK bug fails this step, and is retried like any failure
        return EngineJobDone(job.job_id, f"unexpected {type(exc).__name__}: {exc}", False, None)
    finally:
        engine.close()


@dataclass(frozen=True)
class PullTick:
    """Timer payload: pass the pull's progress on, and its answer once it has one."""


class EngineWorker(FleetletActor):
    """Runs one job and exits. A pull runs in a thread of this process while the actor relays its progress on
    a timer: thespian transmits a send only from its own loop, so progress sent from inside a long handler
    would all arrive at the end."""

    name = "engine-worker"
    PULL_TICK = 0.1  # seconds between looks at a running pull (its answer waits at most this)

    def dispatch(self, typed: object, raw: bytes, sender: ActorAddress) -> None:
        if not isinstance(typed, RunEngineJob):
            self.log.warning("ignored %s", type(typed).__name__)
            return
        self.send(sender, messages.encode(EngineJobStarted(typed.job_id, os.getpid())))
        self.job, self.parent = typed, sender
        engine = DockerEngine(typed.owner, options=typed.options)
        if typed.step is None or typed.step.action != Action.PULL.value:
            self._finish(run_job(typed, engine))
            return
        self.progress: PullProgressed | None = None
        self.relayed: PullProgressed | None = None
        self.answer: EngineJobDone | None = None

        def progress(state: PullState, total: int) -> None:
            self.progress = PullProgressed(typed.job_id, state.downloaded, state.extracted, total)

        def pull() -> None:
            self.answer = run_job(typed, engine, progress)

        threading.Thread(target=pull, name="pull", daemon=True).start()
        self.after(self.PULL_TICK, PullTick())

    def on_timer(self, payload: object) -> None:
        if not isinstance(payload, PullTick):
            return
        if self.progress is not None and self.progress != self.relayed:
            self.relayed = self.progress
            self.send(self.parent, messages.encode(self.progress))
        if self.answer is None:
            self.after(self.PULL_TICK, PullTick())
        else:
            self._finish(self.answer)

    def _finish(self, done: EngineJobDone) -> None:
        if done.error:
            self.log.warning("job %d failed: %s", self.job.job_id, done.error)
        self.send(self.parent, messages.encode(done))
        self.send(self.myAddress, ActorExitRequest())
