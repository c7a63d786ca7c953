"""Benchmark: target-state validation time against document size, next to decoding alone (json.loads).

Issue 14 measured the validator quadratic (2,000 ports 0.55 s, 4,000 2.5 s, 8,000 10 s). Here:
- accepted documents of 2k/4k/8k ports (8 services, each within the per-service limit), and 16k, 32k
  spread over more services: the time should double with the size;
- 2k/4k/8k ports in one service, over MAX_PORTS_PER_SERVICE: refused at the count;
- hostile documents of about 1 MiB, each shape the validator was slow on: refused well under a second.
Each figure is the best of `--repeat` runs (CPU time of this process), beside json.loads of the same bytes.
Run: python3 -m bench.validation [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import time

from bench.common import write_result
from messages.protocol.target_state import InvalidTargetState, limits, parse_target_state


def ports(count: int, offset: int = 0) -> list[str]:
    return [f"{1 + (offset + i) % 65535}:{1 + (offset + i) // 65535}" for i in range(count)]


def services_with_ports(total: int, per_service: int) -> dict:
    services = [{"serviceName": f"s{i}", "config": {"image": "busybox", "ports": ports(per_service, i * per_service)}}
                for i in range(total // per_service)]
    return {"apps": {"1": {"services": services}}}


def one_service(**config) -> dict:
    return {"apps": {"1": {"services": [{"serviceName": "s", "config": {"image": "busybox", **config}}]}}}


def hostile() -> dict[str, dict]:
    """About 1 MiB each."""
    return {
        "90k_ports_in_one_service": one_service(ports=ports(90_000)),
        "100_services_of_1024_ports_duplicate_at_the_end": {"apps": {"1": {"services": [
            {"serviceName": f"s{i}", "config": {"image": "x", "ports": ports(1023) + ["1:1" if i == 99 else "2:2/udp"]}}
            for i in range(100)]}}},
        "80k_environment_entries": one_service(environment=[f"K{i}=v" for i in range(80_000)]),
        "100k_networks": one_service(networks=[f"n{i}" for i in range(100_000)]),
        "12k_services_in_a_dependency_chain": {"apps": {"1": {"services": [
            {"serviceName": f"s{i}", "config": {"image": "x", "depends_on": [f"s{i + 1}"] if i < 12_000 else []}}
            for i in range(12_000)]}}},
        "16_services_with_a_64KiB_command": {"apps": {"1": {"services": [
            {"serviceName": f"s{i}", "config": {"image": "x", "command": "a" * 65_000 + ("'" if i == 15 else "")}}
            for i in range(16)]}}},
        "1k_apps": {"apps": {f"a{i}": {"services": [{"serviceName": "s", "config": {"image": "x"}}]}
                             for i in range(1000)}},
        "one_1MiB_command_string": one_service(command="x " * 500_000),
    }


def measure(raw: bytes, repeat: int) -> dict:
    def best(work) -> float:
        times = []
        for _ in range(repeat):
            started = time.process_time()
            work()
            times.append(time.process_time() - started)
        return min(times)

    outcome = {}

    def validate():
        try:
            parse_target_state(raw)
            outcome["result"] = "accepted"
        except InvalidTargetState as exc:
            outcome["result"] = f"refused: {exc.reason[:100]}"

    return {"bytes": len(raw), "validate_ms": round(best(validate) * 1000, 2),
            "json_loads_ms": round(best(lambda: json.loads(raw)) * 1000, 2), **outcome}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    per = limits.MAX_PORTS_PER_SERVICE
    accepted = {f"{total}_ports": measure(json.dumps(services_with_ports(total, min(per, total // 8))).encode(),
                                          args.repeat) for total in (2048, 4096, 8192, 16384, 32768)}
    refused_at_count = {f"{total}_ports_in_one_service": measure(json.dumps(one_service(ports=ports(total))).encode(),
                                                                 args.repeat) for total in (2000, 4000, 8000)}
    hostile_documents = {name: measure(json.dumps(document).encode(), args.repeat)
                         for name, document in hostile().items()}
    sizes = list(accepted.values())
    result = {
        "limits": {name: getattr(limits, name) for name in dir(limits) if name.startswith("MAX_")},
        "accepted": accepted,
        "time_ratio_per_doubling": [round(b["validate_ms"] / a["validate_ms"], 2)
                                    for a, b in zip(sizes, sizes[1:], strict=False)],
        "refused_at_the_count": refused_at_count,
        "hostile_1MiB": hostile_documents,
        "slowest_hostile_ms": max(entry["validate_ms"] for entry in hostile_documents.values()),
        "baseline": "json_loads_ms: decoding the same bytes with the standard library, no validation",
    }
    path = write_result("validation", result)
    print(json.dumps({key: result[key] for key in ("time_ratio_per_doubling", "slowest_hostile_ms")}))
    for group in ("accepted", "refused_at_the_count", "hostile_1MiB"):
        for name, entry in result[group].items():
            print(f"{group:22} {name:50} {entry['bytes']:>9} B  validate {entry['validate_ms']:>8} ms  "
                  f"json.loads {entry['json_loads_ms']:>7} ms  {entry['result'][:60]}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
