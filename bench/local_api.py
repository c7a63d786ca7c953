"""Benchmark: the local API's answers over its Unix socket, against the admin path the CLI used before.

Baseline in the same run: the supervisor's status asked over thespian's transport from another process's
view (``actors.runtime.admin.query_status``: join the actor system, ask, leave), which `run.py status` did
before the API. Then GET /v1/status, GET /metrics, GET /v1/shadow and PATCH /v1/shadow, one connection each.
Run: python3 -m bench.local_api [--rounds 300]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import conf
from actors.api.client import request
from actors.runtime.admin import query_status
from actors.runtime.system import AgentSystem
from bench.common import percentiles, pss_kib, write_result
from cloud.loopback import free_port, wait_until


def measure(rounds: int) -> dict:
    workdir = tempfile.mkdtemp(prefix="fl-bench-api-", dir="/tmp")
    config = conf.load("agent", None, [f"store.path={workdir}/agent.db", f"agent.admin_port={free_port()}",
                                       f"api.socket={workdir}/api.sock", f"api.key_file={workdir}/api.key",
                                       "cloud.url=http://127.0.0.1:9"])
    defaults = config["actors"]
    config["actors"] = {name: defaults[name] for name in ("persistence", "api", "shadow_listener")}
    config["mqtt"].update(port=free_port(), tls=False)  # no broker: the shadow is served from the local copy
    system = AgentSystem(config)
    system.start()
    try:
        wait_until(lambda: os.path.exists(config["api"]["socket"]), 20, "the API")
        result: dict = {}

        def timed(name: str, call) -> None:
            samples = []
            for _ in range(rounds):
                started = time.perf_counter()
                call()
                samples.append((time.perf_counter() - started) * 1000)
            result[name] = percentiles(samples)

        timed("baseline_admin_status", lambda: query_status(config))
        timed("api_get_status", lambda: request(config, "GET", "/v1/status"))
        timed("api_get_metrics", lambda: request(config, "GET", "/metrics"))
        timed("api_get_shadow", lambda: request(config, "GET", "/v1/shadow"))
        body = json.dumps({"reported": {"bench": 1}}).encode()
        timed("api_patch_shadow", lambda: request(config, "PATCH", "/v1/shadow", body))
        api = next(child for child in system.status().children if child.name == "api")
        result["api_actor_pss_kib"] = pss_kib(api.pid)
        result["ratio_p50_status_api_vs_admin"] = round(result["api_get_status"]["p50_ms"] /
                                                        result["baseline_admin_status"]["p50_ms"], 3)
        return result
    finally:
        system.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    result = measure(args.rounds)
    path = write_result("local_api", {"rounds": args.rounds, **result})
    print(json.dumps(result, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
