"""Benchmark: releases on the real Docker engine (persistence + reconciler, the local busybox images).

- rollback: a committed healthy release, then a target whose health check fails: the time from handing the
  bad target to the agent until the engine runs the previous release again (its config hash, running and
  healthy), and until the report says `rolled_back`.
- downtime: a service with a health check updated to a new image with `download-then-kill` and with
  `hand-over`: the longest time during which no container of the service was running and healthy, from the
  engine's container list polled as fast as it answers (a few ms a read), and the time to the commit.

Run: python3 -m bench.updates [--rounds 3] [--settle 1.0] [--health-interval 0.3]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import threading
import time
import uuid

import docker

import conf
import messages
from actors.runtime.processes import become_subreaper
from actors.runtime.system import AgentSystem
from actors.target.engine.adapter import LABEL_CONFIG_HASH, LABEL_OWNER
from bench.common import write_result
from bench.reconcile import remove_owned
from cloud.loopback import free_port, wait_until
from messages.bus.target import TargetStateFetched
from messages.protocol.target_state import config_hash, parse_target_state, to_json
from tests.support.probe_actors import recorded_rows

IMAGES = ("fleetlet-test/busybox:1", "fleetlet-test/busybox:2")
RUN = "trap 'exit 0' TERM; sleep 86400 & wait"


def service(image: str, strategy: str, healthy: bool, interval: float) -> dict:
    ready = "mkdir -p /tmp && touch /tmp/ok; " if healthy else ""
    return {"image": image, "update_strategy": strategy, "command": ["/bin/sh", "-c", ready + RUN],
            "healthcheck": {"test": ["CMD", "/bin/sh", "-c", "test -f /tmp/ok"], "interval": interval,
                            "retries": 1}}


def document(config: dict) -> dict:
    return to_json(parse_target_state({"apps": {"1": {"services": [{"serviceName": "web", "config": config}]}}}))


class Agent:
    def __init__(self, workdir: pathlib.Path, client: docker.DockerClient, settle: float):
        self.client = client
        self.owner = f"bench-{uuid.uuid4().hex[:8]}"
        self.recorded = workdir / f"{self.owner}.jsonl"
        config = conf.load("agent", None, [f"store.path={workdir}/{self.owner}.db",
                                           f"agent.admin_port={free_port()}", f"device.uuid={self.owner}",
                                           "agent.log_level=WARNING", f"update.settle_seconds={settle}",
                                           f"update.lock_dir={workdir}/locks"])
        shipped = config["actors"]
        config["actors"] = {name: shipped[name] for name in ("persistence", "reconciler")}
        config["actors"]["recorder"] = {"class": "tests.support.probe_actors.Recorder",
                                        "subscribes": ["CurrentStateObserved"],
                                        "settings": {"path": str(self.recorded)}}
        self.settings = {**shipped["reconciler"]["settings"], **config["update"]}
        self.system = AgentSystem(config)
        self.system.start()

    def apply(self, doc: dict, etag: str) -> float:
        started = time.perf_counter()
        self.system.asys.tell(self.system.supervisor, messages.encode(TargetStateFetched(doc, etag, time.time())))
        return started

    def release(self) -> dict:
        rows = [row for row in recorded_rows(self.recorded) if row["type"] == "CurrentStateObserved"]
        return rows[-1]["state"].get("release", {}) if rows else {}

    def wait_release(self, status: str, **expected: str) -> float:
        wait_until(lambda: (r := self.release()).get("status") == status
                   and all(r.get(k) == v for k, v in expected.items()), 180, f"release {status}", 0.005)
        return time.perf_counter()

    def healthy(self) -> set[str]:
        """The config hashes of the service's containers that run and are healthy, fresh from the engine."""
        listed = self.client.api.containers(filters={"label": f"{LABEL_OWNER}={self.owner}"})
        return {c["Labels"][LABEL_CONFIG_HASH] for c in listed
                if c["State"] == "running" and c["Status"].endswith("(healthy)")}

    def close(self) -> None:
        self.system.stop()
        remove_owned(self.client, self.owner)


def rollback_round(agent: Agent, interval: float) -> dict:
    good = document(service(IMAGES[0], "download-then-kill", True, interval))
    agent.apply(good, '"good"')
    agent.wait_release("done", running='"good"')
    good_hash = config_hash(parse_target_state(good).apps[0].services[0])
    started = agent.apply(document(service(IMAGES[1], "download-then-kill", False, interval)), '"bad"')
    reported = agent.wait_release("rolled_back", failed_target='"bad"')
    restored = wait_until(lambda: agent.healthy() == {good_hash} and time.perf_counter(), 180, "restored", 0.005)
    return {"to_report_s": reported - started, "to_restored_s": restored - started}


def downtime_round(agent: Agent, strategy: str, interval: float, tag: str) -> dict:
    agent.apply(document(service(IMAGES[0], strategy, True, interval)), f'"{tag}-1"')
    agent.wait_release("done", running=f'"{tag}-1"')
    gaps: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        down_since = None
        while not stop.is_set():
            up = bool(agent.healthy())
            now = time.perf_counter()
            if not up and down_since is None:
                down_since = now
            elif up and down_since is not None:
                gaps.append(now - down_since)
                down_since = None

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        started = agent.apply(document(service(IMAGES[1], strategy, True, interval)), f'"{tag}-2"')
        committed = agent.wait_release("done", running=f'"{tag}-2"')
        wait_until(lambda: len(agent.healthy()) == 1, 60, "one instance", 0.005)
    finally:
        stop.set()
        watcher.join()
    return {"downtime_ms": round(max(gaps, default=0.0) * 1000, 1), "to_commit_s": committed - started}


def median(rounds: list[dict], key: str) -> dict:
    values = [r[key] for r in rounds]
    return {"median": round(statistics.median(values), 3), "all": [round(v, 3) for v in values]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--health-interval", type=float, default=0.3)
    args = parser.parse_args()
    become_subreaper()
    client = docker.from_env()
    if not all(client.images.list(image) for image in IMAGES):
        sys.exit(f"{IMAGES} are missing: run tests/images/build.sh")
    rollbacks, downtimes = [], {"download-then-kill": [], "hand-over": []}
    with tempfile.TemporaryDirectory() as workdir:
        for index in range(args.rounds):
            agent = Agent(pathlib.Path(workdir), client, args.settle)
            try:
                rollbacks.append(rollback_round(agent, args.health_interval))
            finally:
                agent.close()
            for strategy, rounds in downtimes.items():  # interleaved, so both see the same machine
                agent = Agent(pathlib.Path(workdir), client, args.settle)
                try:
                    rounds.append(downtime_round(agent, strategy, args.health_interval, f"{strategy}-{index}"))
                finally:
                    agent.close()
    result = {
        "workload": {"rounds": args.rounds, "settle_seconds": args.settle, "health_interval_s": args.health_interval,
                     "service": "one busybox service with a health check (test -f /tmp/ok), images :1 -> :2, "
                                "both present (no download)"},
        "rollback": {"to_report_s": median(rollbacks, "to_report_s"),
                     "to_restored_s": median(rollbacks, "to_restored_s"),
                     "measured": "from handing the failing target to the agent to the report's rolled_back, and "
                                 "to the engine running the previous config, healthy"},
        "downtime": {strategy: {"downtime_ms": median(rounds, "downtime_ms"),
                                "to_commit_s": median(rounds, "to_commit_s")}
                     for strategy, rounds in downtimes.items()},
        "downtime_measured": "longest time no container of the service was running and healthy in the engine's "
                             "container list, polled continuously",
        "settings": agent.settings,
    }
    path = write_result("updates", result)
    print(json.dumps({key: result[key] for key in ("rollback", "downtime")}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
