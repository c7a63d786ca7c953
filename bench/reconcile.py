"""Benchmark: the reconciler against the real Docker engine, next to `docker-compose up -d` doing the same work.

Per round, for each of the two: converge 20 independent services from nothing (one network, 20 containers
of the local fleetlet-test/busybox:1 image), check a converged device (no-op) several times, and update one
service among the 20 (its environment changes: one container is recreated).

Agent times are wall times seen from outside: from handing the target to the agent (as the poller would)
until the reconciler announces the pass converged (ReconcilePassFinished); a no-op check is a ReconcileNow. Compose
times are the wall times of `docker-compose up -d` (a new process each time, as an operator runs it).
With --wide every service also sets the compose options of `WIDE` (limits, tmpfs, logging, capabilities, ...),
in both the target state and the compose file: the cost of the wider service spec.
Run: python3 -m bench.reconcile [--rounds 3] [--noops 5] [--max-parallel N (default: the shipped setting)] [--wide]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import docker

import conf
import messages
from actors.runtime.processes import become_subreaper
from actors.runtime.system import AgentSystem
from actors.target.engine.adapter import LABEL_OWNER
from bench.common import percentiles, write_result
from cloud.loopback import free_port, wait_until
from messages.bus.engine import ReconcileNow
from messages.bus.target import TargetStateFetched
from messages.protocol.target_state import parse_target_state, to_json
from tests.support.probe_actors import recorded_rows

SERVICES = 20
IMAGE = "fleetlet-test/busybox:1"
UPDATED = "s07"
# Compose's options as a real service sets them (each one's engine test is tests/integration/test_engine_options.py).
WIDE = {"mem_limit": "64m", "mem_reservation": "16m", "cpus": 0.5, "pids_limit": 64, "shm_size": "16m",
        "ulimits": {"nofile": {"soft": 1024, "hard": 2048}}, "tmpfs": ["/run"], "cap_drop": ["NET_RAW"],
        "init": True, "read_only": True, "stop_signal": "SIGTERM", "stop_grace_period": "5s",
        "logging": {"driver": "json-file", "options": {"max-size": "1m"}}, "extra_hosts": ["gateway.local:10.0.0.1"],
        "dns": ["10.0.0.1"], "sysctls": {"net.core.somaxconn": 512}, "security_opt": ["no-new-privileges:true"],
        "working_dir": "/tmp", "expose": ["8080"]}


def services(updated: bool) -> dict[str, dict]:
    """name -> environment; the update changes one service's environment."""
    return {f"s{index:02d}": {"INDEX": str(index), **({"MODE": "updated"} if updated and f"s{index:02d}" == UPDATED
                                                      else {})} for index in range(SERVICES)}


# -- the agent ---------------------------------------------------------------------------------------------


class Agent:
    def __init__(self, workdir: pathlib.Path, client: docker.DockerClient, max_parallel: int | None,
                 options: dict):
        self.client = client
        self.options = options
        self.owner = f"bench-{uuid.uuid4().hex[:8]}"
        self.recorded = workdir / f"{self.owner}.jsonl"
        config = conf.load("agent", None, [f"store.path={workdir}/{self.owner}.db",
                                           f"agent.admin_port={free_port()}", f"device.uuid={self.owner}",
                                           "agent.log_level=WARNING"])
        shipped = config["actors"]
        config["actors"] = {name: shipped[name] for name in ("persistence", "reconciler")}
        if max_parallel is not None:
            shipped["reconciler"]["settings"]["max_parallel"] = max_parallel
        config["actors"]["recorder"] = {"class": "tests.support.probe_actors.Recorder",
                                        "subscribes": ["ReconcilePassFinished"],
                                        "settings": {"path": str(self.recorded)}}
        self.settings = shipped["reconciler"]["settings"]
        self.system = AgentSystem(config)
        self.system.start()
        self.seen = 0

    def _tell(self, msg) -> None:
        self.system.asys.tell(self.system.supervisor, messages.encode(msg))

    def _next_pass(self, match) -> dict:
        """The first pass announced after the last one taken that satisfies `match`."""
        def found():
            rows = recorded_rows(self.recorded)  # the Recorder may be mid-append
            for index in range(self.seen, len(rows)):
                if match(rows[index]):
                    self.seen = index + 1
                    return rows[index]
            return None
        return wait_until(found, 120, "a reconcile pass")

    def apply(self, environments: dict[str, dict], etag: str) -> tuple[float, dict]:
        document = {"apps": {"1": {"services": [
            {"serviceName": name, "config": {"image": IMAGE, "environment": env, **self.options}}
            for name, env in environments.items()]}}}
        started = time.perf_counter()
        self._tell(TargetStateFetched(to_json(parse_target_state(document)), etag, time.time()))
        done = self._next_pass(lambda row: row["etag"] == etag and row["converged"] and row["steps"] > 0)
        return time.perf_counter() - started, done

    def noop(self, seq: int) -> tuple[float, dict]:
        started = time.perf_counter()
        self._tell(ReconcileNow(f"bench {seq}"))
        done = self._next_pass(lambda row: row["trigger"] == f"bench {seq}")
        assert done["converged"] and done["steps"] == 0, done
        return time.perf_counter() - started, done

    def close(self) -> None:
        self.system.stop()
        remove_owned(self.client, self.owner)


def remove_owned(client: docker.DockerClient, owner: str) -> None:
    """Remove the containers and networks a benchmark agent of this owner label created."""
    owned = {"label": f"{LABEL_OWNER}={owner}"}
    for container in client.containers.list(all=True, filters=owned):
        container.remove(force=True)
    for network in client.networks.list(filters=owned):
        network.remove()


def agent_round(workdir: pathlib.Path, client: docker.DockerClient, noops: int, max_parallel: int | None,
                options: dict) -> dict:
    agent = Agent(workdir, client, max_parallel, options)
    try:
        cold, cold_pass = agent.apply(services(False), '"cold"')
        noop = [agent.noop(seq)[0] * 1000 for seq in range(noops)]
        update, update_pass = agent.apply(services(True), '"update"')
        return {"converge_s": cold, "converge_steps": cold_pass["steps"], "noop_ms": noop, "update_s": update,
                "update_steps": update_pass["steps"], "settings": agent.settings}
    finally:
        agent.close()


# -- docker-compose ----------------------------------------------------------------------------------------


def compose_file(environments: dict[str, dict], options: dict) -> str:
    lines = ['version: "2.4"', "services:"]
    for name, env in environments.items():
        lines += [f"  {name}:", f"    image: {IMAGE}", "    restart: always", "    environment:"]
        lines += [f"      {key}: \"{value}\"" for key, value in env.items()]
        lines += [f"    {key}: {json.dumps(value)}" for key, value in options.items()]  # YAML reads JSON
    return "\n".join(lines) + "\n"


def compose_round(workdir: pathlib.Path, noops: int, options: dict) -> dict:
    project = f"bench{uuid.uuid4().hex[:8]}"
    path = workdir / f"{project}.yml"
    command = ["docker-compose", "--project-name", project, "--file", str(path)]

    def up() -> float:
        started = time.perf_counter()
        subprocess.run([*command, "up", "-d"], check=True, capture_output=True)
        return time.perf_counter() - started

    try:
        path.write_text(compose_file(services(False), options))
        cold = up()
        noop = [up() * 1000 for _ in range(noops)]
        path.write_text(compose_file(services(True), options))
        update = up()
        return {"converge_s": cold, "noop_ms": noop, "update_s": update}
    finally:
        subprocess.run([*command, "down", "--timeout", "1"], check=False, capture_output=True)


# -- main --------------------------------------------------------------------------------------------------


def summary(rounds: list[dict]) -> dict:
    return {"converge_20_s": {"median": round(statistics.median(r["converge_s"] for r in rounds), 3),
                              "all": [round(r["converge_s"], 3) for r in rounds]},
            "noop_check": percentiles([sample for r in rounds for sample in r["noop_ms"]]),
            "update_1_of_20_s": {"median": round(statistics.median(r["update_s"] for r in rounds), 3),
                                 "all": [round(r["update_s"], 3) for r in rounds]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--noops", type=int, default=5)
    parser.add_argument("--max-parallel", type=int, default=None)
    parser.add_argument("--wide", action="store_true", help="every service also sets the options of WIDE")
    args = parser.parse_args()
    options = WIDE if args.wide else {}
    if shutil.which("docker-compose") is None:
        sys.exit("docker-compose is not installed (Debian package docker-compose)")
    become_subreaper()
    client = docker.from_env()
    if not client.images.list(IMAGE):
        sys.exit(f"{IMAGE} is missing: run tests/images/build.sh")
    agent_rounds, compose_rounds = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.rounds):  # interleaved, so both see the same machine
            agent_rounds.append(agent_round(pathlib.Path(workdir), client, args.noops, args.max_parallel, options))
            compose_rounds.append(compose_round(pathlib.Path(workdir), args.noops, options))
    agent, compose = summary(agent_rounds), summary(compose_rounds)
    result = {
        "workload": {"services": SERVICES, "image": IMAGE, "rounds": args.rounds, "noops_per_round": args.noops,
                     "update": f"environment of {UPDATED} changes: one container recreated",
                     "service_options": options},
        "agent": {**agent, "reconciler_settings": agent_rounds[0]["settings"],
                  "steps": {"converge": agent_rounds[0]["converge_steps"], "update": agent_rounds[0]["update_steps"]},
                  "measured": "from handing the target (or ReconcileNow) to the agent to its converged "
                              "ReconcilePassFinished"},
        "docker_compose": {**compose, "version": subprocess.run(["docker-compose", "version", "--short"],
                                                                capture_output=True, text=True).stdout.strip(),
                           "measured": "wall time of `docker-compose up -d`, a new process each time"},
    }
    path = write_result("reconcile", result)
    print(json.dumps({"agent": agent, "docker_compose": compose}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
