"""Benchmark: actor-to-actor round trip through the supervisor, and the idle agent's memory and CPU.

Baseline in the same run: a bare thespian ask round trip (external client -> supervisor -> back), the
transport's own cost, against which the routed actor-to-actor round trip (two routed hops) is quoted.
Run: python3 -m bench.runtime [--rounds 2000] [--idle-seconds 30]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import conf
import messages
from actors.runtime.processes import become_subreaper, group_members
from actors.runtime.system import AgentSystem
from bench.common import cpu_ticks, percentiles, pss_kib, write_result
from bench.ping_actors import BenchStart
from cloud.loopback import free_port
from messages.bus.runtime import Ping

ROOT = pathlib.Path(__file__).resolve().parent.parent  # the checkout: the processes it starts run there


def round_trips(workdir: str, rounds: int) -> dict:
    config = conf.load("agent", None, [f"store.path={workdir}/rt.db", f"agent.admin_port={free_port()}"])
    config["actors"] = {
        "pinger": {"class": "bench.ping_actors.Pinger", "subscribes": ["BenchStart", "BenchPong"]},
        "ponger": {"class": "bench.ping_actors.Ponger", "subscribes": ["BenchPing"]},
    }
    system = AgentSystem(config)
    system.start()
    try:
        baseline = []
        for seq in range(rounds):
            started = time.perf_counter()
            system.asys.ask(system.supervisor, messages.encode(Ping(seq, started)), 5)
            baseline.append((time.perf_counter() - started) * 1000)
        out = pathlib.Path(workdir, "samples.json")
        system.asys.tell(system.supervisor, messages.encode(BenchStart(rounds, str(out))))
        deadline = time.monotonic() + 120
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.05)
        routed = json.loads(out.read_text())
    finally:
        system.stop()
    base, actor = percentiles(baseline), percentiles(routed)
    return {"baseline_ask_round_trip": base, "actor_to_actor_routed_round_trip": actor,
            "ratio_p50_routed_vs_baseline": round(actor["p50_ms"] / base["p50_ms"], 2)}


def idle_agent(workdir: str, seconds: float) -> dict:
    """The default agent configuration, as shipped, idling (no broker or cloud needed to idle)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "run.py", "agent", "--set", f"store.path={workdir}/idle.db",
                             "--set", f"agent.admin_port={port}", "--set", "mqtt.port=1", "--set", "mqtt.tls=false",
                             "--set", "cloud.url=http://127.0.0.1:1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(8)  # let every actor start and settle
        run = json.loads(pathlib.Path(workdir, "idle.db.run").read_text())
        pids = [proc.pid] + [pid for pgid in map(int, run["groups"]) for pid in group_members(pgid)]
        ticks_before = {pid: cpu_ticks(pid) for pid in pids}
        time.sleep(seconds)
        ticks = sum(cpu_ticks(pid) - ticks_before[pid] for pid in pids)
        pss = sum(pss_kib(pid) for pid in pids)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    hz = os.sysconf("SC_CLK_TCK")
    return {"processes": len(pids), "pss_total_mib": round(pss / 1024, 1),
            "idle_seconds": seconds, "cpu_seconds": round(ticks / hz, 3),
            "cpu_percent_of_one_core": round(100 * ticks / hz / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    become_subreaper()
    with tempfile.TemporaryDirectory() as workdir:
        result = {"round_trip": round_trips(workdir, args.rounds), "idle_agent": idle_agent(workdir, args.idle_seconds)}
    path = write_result("runtime", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
