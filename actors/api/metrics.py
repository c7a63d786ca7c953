"""``GET /metrics``: the agent's figures in the Prometheus text format (through ``prometheus_client``).

Every family is declared here, once, with its help and type, and always present (a family no actor has
counted into yet has no samples). The figures come from the actors that own them, as the supervisor's
status carries them (``actors.runtime.figures``); the restarts are the supervisor's own; the outbox depth
is read from the store; memory (PSS, from ``/proc/PID/smaps_rollup``) and CPU are summed over the
agent's processes, every process of the actor system's group.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily

from actors.api.http import Request, Response
from actors.runtime.processes import group_members
from messages.bus.runtime import StatusReply
from store import Store, StoreMissing

# family -> (help, labels); the names are as exposed (a counter's _total is added by the exposition).
COUNTERS = {
    "fleetlet_actor_restarts": ("restarts of each actor by its supervisor", ("actor",)),
    "fleetlet_steps": ("engine steps run, by action and outcome", ("action", "outcome")),
    "fleetlet_polls": ("target-state polls, by outcome (the HTTP status, or error)", ("outcome",)),
    "fleetlet_reports": ("state reports the cloud accepted", ()),
    "fleetlet_report_bytes": ("bytes of the state reports the cloud accepted (their JSON patch)", ()),
    "fleetlet_shadow_deltas": ("shadow deltas received", ("shadow",)),
    "fleetlet_shadow_reports": ("shadow reports sent", ("shadow",)),
    "fleetlet_link_bytes": ("bytes sent and received per link (head and payload; TLS framing aside)",
                            ("link", "direction")),
    "fleetlet_api_requests": ("local API requests, by answer (the status, or ok)", ("answer",)),
    "fleetlet_cpu_seconds": ("CPU time of the agent's processes (user and system)", ()),
}
SUMMARIES = {
    "fleetlet_reconcile_pass_seconds": ("reconcile passes and their duration", ()),
    "fleetlet_shadow_roundtrip_seconds": ("time from a shadow report to the broker's answer", ("shadow",)),
}
GAUGES = {
    "fleetlet_outbox_depth": ("reports waiting in the durable outbox, per channel", ("channel",)),
    "fleetlet_memory_pss_bytes": ("proportional set size summed over the agent's processes", ()),
}
FAMILIES = (*COUNTERS, *SUMMARIES, *GAUGES)


class ApiCounters:
    """The API actor's own figure: requests by answer."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}

    def request(self, request: Request, status: int | None) -> None:
        answer = "ok" if status is None else str(status)
        self.requests[answer] = self.requests.get(answer, 0) + 1


def families(reply: StatusReply, outbox: dict[str, int], api: ApiCounters, pss: int, cpu: float) -> list[Metric]:
    """Every family, from the status (the children's figures), the outbox and the process figures: pure."""
    counters = {name: CounterMetricFamily(name, text, labels=list(labels)) for name, (text, labels) in COUNTERS.items()}
    summaries = {name: SummaryMetricFamily(name, text, labels=list(labels))
                 for name, (text, labels) in SUMMARIES.items()}
    gauges = {name: GaugeMetricFamily(name, text, labels=list(labels)) for name, (text, labels) in GAUGES.items()}
    for child in reply.children:
        counters["fleetlet_actor_restarts"].add_metric([child.name], child.restarts)
    # Summed over the children: two actors may count into one family with the same labels (link bytes).
    totals: dict[tuple[str, tuple[str, ...]], float] = {}
    sums: dict[tuple[str, tuple], list[float]] = {}
    for child in reply.children:
        for family, samples in child.figures.items():
            for labels, value in samples:
                if family in counters:
                    key = (family, tuple(str(labels.get(n, "")) for n in COUNTERS[family][1]))
                    totals[key] = totals.get(key, 0) + value
                elif family.endswith(("_sum", "_count")) and family.rsplit("_", 1)[0] in summaries:
                    base, part = family.rsplit("_", 1)
                    key = (base, tuple(str(labels.get(n, "")) for n in SUMMARIES[base][1]))
                    pair = sums.setdefault(key, [0.0, 0.0])
                    pair[0 if part == "count" else 1] += value
    for (family, values), value in sorted(totals.items()):
        counters[family].add_metric(list(values), value)
    for (base, values), (count, total) in sorted(sums.items()):
        summaries[base].add_metric(list(values), int(count), total)
    for answer, count in sorted(api.requests.items()):
        counters["fleetlet_api_requests"].add_metric([answer], count)
    for channel, depth in sorted(outbox.items()):
        gauges["fleetlet_outbox_depth"].add_metric([channel], depth)
    gauges["fleetlet_memory_pss_bytes"].add_metric([], pss)
    counters["fleetlet_cpu_seconds"].add_metric([], cpu)
    return [*counters.values(), *summaries.values(), *gauges.values()]


class _Fixed:
    def __init__(self, metrics: Iterable[Metric]):
        self.metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def exposition(metrics: Iterable[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(metrics))
    return generate_latest(registry)


def render(reply: StatusReply, config: dict, api: ApiCounters) -> Response:
    try:
        with Store.open(config["store"]["path"], readonly=True) as store:
            outbox = store.outbox_depth()
    except StoreMissing:
        outbox = {}
    pss, cpu = process_figures(group_members(os.getpgrp()))
    return Response(200, exposition(families(reply, outbox, api, pss, cpu)), content_type=CONTENT_TYPE_LATEST)


def process_figures(pids: Iterable[int]) -> tuple[int, float]:
    """PSS bytes and CPU seconds summed over ``pids`` (a process that ended meanwhile counts nothing)."""
    pss, ticks = 0, 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                        break
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
        except (OSError, ValueError, IndexError):
            continue
    return pss, ticks / os.sysconf("SC_CLK_TCK")
