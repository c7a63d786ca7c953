"""Fault measurement: SIGKILL random actors of a running agent and count the collateral restarts.

A collateral restart is a new pid for an actor that was not killed (an escalation restarting the tree, or a
sibling restarted with the one that died). The agent runs as operators run it (`run.py agent`), with the
shipped supervisor policy and persistence, plus idle actors to kill; persistence itself is not killed (past
its limit it escalates by design: every actor depends on it). The killed actor is chosen among those running.
Run: python3 -m bench.random_kills [--kills 30] [--interval 1.0] [--actors 5] [--seed 1]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import time

import conf
from actors.runtime.admin import query_status
from bench.common import write_result
from cloud.loopback import free_port, wait_until

ROOT = pathlib.Path(__file__).resolve().parent.parent


def agent_file(workdir: str, port: int, actors: int) -> str:
    path = pathlib.Path(workdir) / "agent.toml"
    lines = [f'[store]\npath = "{workdir}/agent.db"\n[agent]\nadmin_port = {port}\n']
    for name, entry in conf.defaults("agent")["actors"].items():
        if name != "persistence":
            lines.append(f'[actors.{name}]\nclass = "{entry["class"]}"\nenabled = false\n')
    for index in range(actors):
        lines.append(f'[actors.idle{index}]\nclass = "bench.ping_actors.Ponger"\nsubscribes = ["BenchPing"]\n')
    path.write_text("".join(lines))
    return str(path)


def pids(config: dict) -> dict[str, int | None] | None:
    reply = query_status(config, timeout=5.0)
    return None if reply is None else {child.name: child.pid for child in reply.children}


def measure(kills: int, interval: float, actors: int, seed: int) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        path = agent_file(workdir, port, actors)
        config = conf.load("agent", path, [])
        agent = subprocess.Popen([sys.executable, "run.py", "agent", "--config", path], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            expected = wait_until(lambda: (p := pids(config)) and all(p.values()) and p, 60, "the agent up")
            collateral, killed, silent = 0, 0, 0
            while killed < kills:
                running = [name for name, pid in expected.items() if pid and name != "persistence"]
                if running:
                    victim = rng.choice(running)
                    try:
                        os.kill(expected[victim], signal.SIGKILL)
                        killed += 1
                    except ProcessLookupError:
                        pass
                    expected[victim] = None  # it restarts (or cools down): its next pid is not collateral
                time.sleep(interval)  # the fault rate itself, not a synchronisation
                seen = pids(config)
                if seen is None:
                    silent += 1
                    continue
                for name, pid in seen.items():
                    if expected.get(name) is not None and pid != expected[name]:
                        collateral += 1
                    if pid is not None or expected.get(name) is not None:
                        expected[name] = pid
            return {"kills": killed, "interval_s": interval, "actors": actors + 1, "seed": seed,
                    "collateral_restarts": collateral, "status_unanswered": silent}
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--actors", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = measure(args.kills, args.interval, args.actors, args.seed)
    print(result)
    write_result("random_kills", result)


if __name__ == "__main__":
    main()
