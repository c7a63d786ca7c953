"""Benchmark: the fault suite's long mode (issue 14), never run in CI; tests/faults runs the same scenarios small.

Each scenario runs on its own rig (tests/faults/harness.py: `run.py agent`, Mosquitto, the reference cloud,
a private dockerd) and records its figures and the promises it saw broken ("failures"):
  actor_kills      SIGKILL of random actors x100, each actor kept below its intensity limit
  actor_over_limit one actor killed past its limit (it alone should cool down)
  broker_restarts  Mosquitto restarted x20 while desired values change
  agent_kills      SIGKILL of the whole agent x20 at random points of an apply, x10 within its first second
  engine_outage    the private dockerd stopped 60 s during an update
  hostile_input    20,000 hostile MQTT payloads on every subscribed topic, then every kind of garbage HTTP answer
Run: python3 -m bench.faults [--only NAME ...] [--seed N]; writes bench/results/faults.json.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time

from actors.runtime.processes import become_subreaper
from bench.common import RESULTS, write_result
from tests.faults import scenarios
from tests.faults.harness import Rig

LONG = {
    "actor_kills": lambda rig, rng: scenarios.actor_kills(rig, 100, rng),
    "actor_over_limit": scenarios.actor_over_limit,
    "broker_restarts": lambda rig, rng: scenarios.broker_restarts(rig, 20, rng),
    "agent_kills": lambda rig, rng: scenarios.agent_kills(rig, 20, 10, rng),
    "engine_outage": lambda rig, rng: scenarios.engine_outage(rig, 60.0, rng),
    "hostile_input": lambda rig, rng: scenarios.hostile_input(rig, 20_000, rng),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(LONG), default=sorted(LONG, key=list(LONG).index))
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args(argv)
    become_subreaper()  # a killed run's orphans reparent here, where the scenarios look for them
    results = {}
    for name in args.only:
        started = time.monotonic()
        with (tempfile.TemporaryDirectory(prefix=f"faults-{name}-") as workdir,
              Rig(workdir, **scenarios.RIG_OPTIONS.get(name, {})) as rig):
            try:
                figures = LONG[name](rig, random.Random(args.seed))
            except AssertionError as exc:  # a scenario that could not even finish: that is its figure
                figures = {"failures": [f"aborted: {exc}"]}
        figures["seconds"] = round(time.monotonic() - started, 1)
        results[name] = figures
        print(f"[faults] {name}: {json.dumps(figures)}", flush=True)
    try:  # a run of some scenarios keeps the others' last figures
        kept = json.loads((RESULTS / "faults.json").read_text())["scenarios"]
    except (OSError, ValueError, KeyError):
        kept = {}
    results = {**kept, **results}
    path = write_result("faults", {"seed": args.seed, "scenarios": results,
                                   "failures": sum(len(f["failures"]) for f in results.values())})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
