"""Benchmark: pulls from a real registry (TLS + htpasswd, `cloud.registry`, on loopback), the agent next to Docker's
own clients doing the same.

1. The large image (busybox + 64 MiB of random bytes): the agent's pull (the engine adapter's Pull step as a worker
   runs it: the disk-space preflight against the registry, then the streaming pull with progress) against
   `docker pull` of the same image from the same registry, the image absent before each.
2. 20 services whose images (3 tags of one multi-layer image) come from the registry, converged from nothing:
   the agent (persistence + reconciler, the target with the registry's login, timed from handing it the target
   to its converged ReconcilePassFinished) against `docker-compose up -d` of the same 20 services (a compose
   file generated in a temporary directory, `docker login` done beforehand in a private DOCKER_CONFIG).
Rounds are interleaved so both see the same machine. Run: python3 -m bench.pull [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
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
from actors.target.engine.adapter import LABEL_OWNER, DockerEngine
from actors.target.model import Pull
from bench.common import write_result
from cloud import pki
from cloud.loopback import free_port, wait_until
from cloud.registry import Registry
from messages.bus.target import TargetStateFetched
from messages.protocol.target_state import RegistryCredentials, parse_target_state, to_json
from tests.support.probe_actors import recorded_rows

SERVICES = 20
TAGS = ("fleetlet-test/app:1", "fleetlet-test/app:2", "fleetlet-test/app:3")
BIG = "fleetlet-test/big:1"


def absent(client: docker.DockerClient, *images: str) -> None:
    for image in images:
        try:
            client.images.remove(image, force=True)
        except docker.errors.NotFound:
            pass


def service_images(registry: Registry) -> dict[str, str]:
    return {f"s{index:02d}": registry.image(TAGS[index % len(TAGS)]) for index in range(SERVICES)}


# -- 1. the large image ----------------------------------------------------------------------------------------


def agent_pull(client: docker.DockerClient, registry: Registry) -> float:
    image = registry.image(BIG)
    absent(client, image)
    engine = DockerEngine(f"bench-{uuid.uuid4().hex[:8]}")
    started = time.perf_counter()
    engine.execute(Pull("1", "big", "bench", image), RegistryCredentials(registry.user, registry.password),
                   lambda state, total: None)
    elapsed = time.perf_counter() - started
    engine.close()
    return elapsed


def docker_pull(client: docker.DockerClient, registry: Registry, config_dir: str) -> float:
    image = registry.image(BIG)
    absent(client, image)
    started = time.perf_counter()
    subprocess.run(["docker", "--config", config_dir, "pull", "--quiet", image], check=True, capture_output=True)
    return time.perf_counter() - started


# -- 2. twenty services ------------------------------------------------------------------------------------------


def agent_converge(client: docker.DockerClient, registry: Registry, workdir: pathlib.Path) -> float:
    absent(client, *(registry.image(tag) for tag in TAGS))
    owner = f"bench-{uuid.uuid4().hex[:8]}"
    recorded = workdir / f"{owner}.jsonl"
    config = conf.load("agent", None, [f"store.path={workdir}/{owner}.db", f"agent.admin_port={free_port()}",
                                       f"device.uuid={owner}", "agent.log_level=WARNING"])
    shipped = config["actors"]
    config["actors"] = {name: shipped[name] for name in ("persistence", "reconciler")}
    config["actors"]["recorder"] = {"class": "tests.support.probe_actors.Recorder",
                                    "subscribes": ["ReconcilePassFinished"], "settings": {"path": str(recorded)}}
    system = AgentSystem(config)
    system.start()
    try:
        document = {"apps": {"1": {"services": [{"serviceName": name, "config": {"image": image}}
                                                for name, image in service_images(registry).items()]}},
                    "registries": {registry.host: {"username": registry.user, "password": registry.password}}}
        started = time.perf_counter()
        system.asys.tell(system.supervisor, messages.encode(
            TargetStateFetched(to_json(parse_target_state(document)), '"bench"', time.time())))
        wait_until(lambda: any(row["etag"] == '"bench"' and row["converged"] and row["steps"] > 0
                               for row in recorded_rows(recorded)), 300, "the agent to converge", 0.01)
        return time.perf_counter() - started
    finally:
        system.stop()
        owned = {"label": f"{LABEL_OWNER}={owner}"}
        for container in client.containers.list(all=True, filters=owned):
            container.remove(force=True)
        for network in client.networks.list(filters=owned):
            network.remove()


def compose_converge(client: docker.DockerClient, registry: Registry, workdir: pathlib.Path, config_dir: str) -> float:
    absent(client, *(registry.image(tag) for tag in TAGS))
    project = f"bench{uuid.uuid4().hex[:8]}"
    path = workdir / f"{project}.yml"
    lines = ['version: "2.4"', "services:"]
    for name, image in service_images(registry).items():
        lines += [f"  {name}:", f"    image: {image}", "    restart: always"]
    path.write_text("\n".join(lines) + "\n")
    command = ["docker-compose", "--project-name", project, "--file", str(path)]
    environment = {**os.environ, "DOCKER_CONFIG": config_dir}
    try:
        started = time.perf_counter()
        subprocess.run([*command, "up", "-d"], check=True, capture_output=True, env=environment)
        return time.perf_counter() - started
    finally:
        subprocess.run([*command, "down", "--timeout", "1"], check=False, capture_output=True, env=environment)


# -- main ----------------------------------------------------------------------------------------------------------


def stats(samples: list[float]) -> dict:
    return {"median_s": round(statistics.median(samples), 3), "all_s": [round(sample, 3) for sample in samples]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for tool in ("docker-registry", "docker-compose"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (Debian package {tool})")
    become_subreaper()
    client = docker.from_env(timeout=300)
    with tempfile.TemporaryDirectory() as temporary:
        workdir = pathlib.Path(temporary)
        pki.init(workdir / "pki")
        registry = Registry(workdir / "registry", free_port(), workdir / "pki").configure()
        registry.trust()
        registry.start()
        config_dir = str(workdir / "docker-config")
        try:
            registry.push_test_images(client)
            subprocess.run(["docker", "--config", config_dir, "login", registry.host, "--username", registry.user,
                            "--password-stdin"], input=registry.password.encode(), check=True, capture_output=True)
            samples: dict[str, list[float]] = {"agent_pull": [], "docker_pull": [], "agent_20": [], "compose_20": []}
            for _ in range(args.rounds):
                samples["agent_pull"].append(agent_pull(client, registry))
                samples["docker_pull"].append(docker_pull(client, registry, config_dir))
                samples["agent_20"].append(agent_converge(client, registry, workdir))
                samples["compose_20"].append(compose_converge(client, registry, workdir, config_dir))
        finally:
            registry.stop()
            registry.distrust()
            for image in client.api.images():
                for tag in image.get("RepoTags") or ():
                    if tag.startswith(registry.host + "/"):
                        client.images.remove(tag, force=True)
    summary = {name: stats(values) for name, values in samples.items()}
    result = {
        "workload": {"rounds": args.rounds, "large_image": f"{BIG}: busybox + 64 MiB of random bytes",
                     "services": f"{SERVICES} services over {', '.join(TAGS)} (shared base layers)",
                     "registry": "docker-registry (distribution) on 127.0.0.1, TLS, htpasswd; images absent before "
                                 "each measurement"},
        "large_image_pull": {"agent": summary["agent_pull"], "docker_pull": summary["docker_pull"],
                             "ratio_agent_to_docker": round(summary["agent_pull"]["median_s"]
                                                            / summary["docker_pull"]["median_s"], 2),
                             "measured": "agent: the Pull step as a worker runs it (preflight + streaming pull); "
                                         "docker: `docker pull --quiet`, a new process each time"},
        "converge_20_from_registry": {"agent": summary["agent_20"], "docker_compose": summary["compose_20"],
                                      "ratio_agent_to_compose": round(summary["agent_20"]["median_s"]
                                                                      / summary["compose_20"]["median_s"], 2),
                                      "measured": "agent: target handed over -> converged ReconcilePassFinished; "
                                                  "compose: wall time of `docker-compose up -d`"},
    }
    path = write_result("pull", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
