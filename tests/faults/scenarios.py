"""The fault scenarios of issue 14, each a function of a running Rig, a size and a seeded RNG.

Each returns its figures (counts, seconds, KiB) and ``failures``: the promises it saw broken, in words. The
quick tests (tests/faults/test_faults.py) assert there are none; bench.faults runs the long sizes and writes
the figures. Injection moments are random (seeded, printed) on purpose; every wait is on a condition.
"""
from __future__ import annotations

import itertools
import json
import random
import threading
import time

from actors.runtime.processes import children_of
from actors.shadow.payloads import subscriptions
from messages.protocol.api import poll_now_topic
from messages.protocol.shadow_topics import shadow_topics
from tests.faults.garbage import GARBAGE, hostile_payloads
from tests.faults.harness import Rig, describe, pss_kib_of
from tests.support.cloud import MqttProbe
from tests.support.polling import wait_for

# Rig options a scenario needs, for its quick and its long mode alike: a longer apply to interrupt; quick retries
# so that the poller and the reporter meet every kind of garbage within seconds.
RIG_OPTIONS: dict[str, dict] = {
    "agent_kills": {"settings": {"reconciler": {"max_parallel": 2}}},
    "hostile_input": {"settings": {"poller": {"backoff_min": 0.05, "backoff_max": 0.2},
                                   "reporter": {"retry_min": 0.05, "retry_max": 0.2}}},
}


def _pids(actors: dict) -> dict[str, int]:
    return {name: actor["pid"] for name, actor in actors.items()}


def _restarts(actors: dict) -> dict[str, int]:
    return {name: actor["restarts"] for name, actor in actors.items()}


def _settled(rig: Rig, timeout: float = 20.0) -> dict | None:
    try:
        return rig.wait_up(timeout)
    except AssertionError:
        return None


# -- 1. SIGKILL of random actors ---------------------------------------------------------------------------

def actor_kills(rig: Rig, kills: int, rng: random.Random) -> dict:
    """Kill random actors at a rate each stays below its intensity limit: nobody else may get a new pid."""
    supervisor = rig.effective("supervisor")
    intensity, period = supervisor["intensity"], supervisor["period"]
    rig.start_agent()
    actors = rig.wait_up()
    killed_at: dict[str, list[float]] = {name: [] for name in actors}
    failures, collateral, recovery = [], 0, []
    done = 0
    while done < kills:
        now = time.monotonic()
        eligible = [n for n, times in killed_at.items() if sum(now - t < period for t in times) < intensity - 1]
        if not eligible:  # everyone is near the limit: wait for the oldest kill to age out
            time.sleep(max(0.0, min(t for times in killed_at.values() for t in times) + period - now) + 0.1)
            continue
        victim = rng.choice(sorted(eligible))
        before = _pids(actors)
        rig.kill_pid(before[victim])
        killed_at[victim].append(time.monotonic())
        done += 1
        try:
            after = wait_for(lambda v=victim, old=before[victim]: (a := rig.actors_up()) and a[v]["pid"] != old and a,
                             timeout=60, interval=0.1, what=f"{victim} back")
        except AssertionError:
            doc = rig.status() or {}
            failures.append(f"{victim} killed ({len(killed_at[victim])} kills) did not come back within 60 s: "
                            f"agent {doc.get('state')} {doc.get('reason')}; "
                            f"{[(a['name'], a['state'], a['restarts']) for a in doc.get('actors', [])]}")
            break
        recovery.append(time.monotonic() - killed_at[victim][-1])
        moved = sorted(n for n in before if n != victim and after[n]["pid"] != before[n])
        if moved:
            collateral += len(moved)
            failures.append(f"killing {victim} gave {', '.join(moved)} a new pid")
        actors = after
    return {"kills": done, "collateral_restarts": collateral, "recovery_s_max": round(max(recovery, default=0), 2),
            "recovery_s_mean": round(sum(recovery) / max(1, len(recovery)), 2), "failures": failures}


def actor_over_limit(rig: Rig, rng: random.Random) -> dict:
    """Kill one child past its intensity: it alone cools down; nobody else restarts, the tree stays."""
    intensity = rig.effective("supervisor")["intensity"]
    rig.start_agent()
    actors = rig.wait_up()
    victim = rng.choice(sorted(set(actors) - {"persistence"}))  # persistence escalates by design
    before = _pids(actors)
    for _ in range(intensity + 1):
        old = actors[victim]["pid"]
        rig.kill_pid(old)
        if _ < intensity:
            actors = wait_for(lambda old=old: (a := rig.actors_up()) and a[victim]["pid"] != old and a,
                              timeout=30, interval=0.1, what=f"{victim} back")

    def outcome():
        doc = rig.status()
        if doc is None:
            return None
        states = {a["name"]: a for a in doc["actors"]}
        if doc["state"] != "running" or any(states[n]["pid"] != before[n] for n in before if n != victim):
            return "tree", states
        if states[victim]["state"] in ("failed", "restarting") and states[victim]["pid"] is None:
            return states[victim]["state"], states
        return None

    seen, states = wait_for(outcome, timeout=30, interval=0.2, what=f"{victim} past its limit")
    if seen == "restarting":  # one more restart allowed? let it settle into its verdict
        seen, states = wait_for(lambda: (o := outcome()) and o[0] != "restarting" and o, timeout=30,
                                interval=0.2, what=f"{victim}'s verdict")
    final = _settled(rig, 15) if seen == "tree" else {a["name"]: a for a in rig.status()["actors"]}
    moved = sorted(n for n in before if n != victim and (final or {}).get(n, {}).get("pid") != before[n])
    failures = []
    if seen != "failed":
        failures.append(f"{victim} past its limit: the whole tree restarted instead of {victim} cooling down")
    if moved:
        failures.append(f"{victim} past its limit gave {', '.join(moved)} a new pid")
    return {"victim": victim, "kills": intensity + 1, "verdict": seen, "collateral_restarts": len(moved),
            "failures": failures}


# -- 2. broker restarts while desired values change --------------------------------------------------------

def broker_restarts(rig: Rig, restarts: int, rng: random.Random) -> dict:
    """Restart the broker while desired values change; the final reported is the final desired and nothing
    that was never desired is ever reported (sampled from the cloud's shadow and the app's file)."""
    rig.start_agent()
    rig.wait_up()
    desired: list[int] = []
    seen: set = set()
    stop = threading.Event()

    def change():
        for value in itertools.count(1000):
            if stop.wait(rng.uniform(0.1, 0.4)):
                return
            rig.desire({"level": value})
            desired.append(value)

    def sample():
        while not stop.wait(0.03):
            level = rig.reported().get("level")
            if level is not None:
                seen.add(level)
            text = rig.app_file.read_text() if rig.app_file.exists() else ""
            seen.update(_file_level(text))

    threads = [threading.Thread(target=change, daemon=True), threading.Thread(target=sample, daemon=True)]
    for thread in threads:
        thread.start()
    downtime = []
    try:
        for _ in range(restarts):
            time.sleep(rng.uniform(0.3, 1.5))  # the fault's moment: random, not a synchronisation
            rig.broker.stop()
            down = rng.uniform(0.2, 2.0)
            time.sleep(down)
            rig.broker.start()
            downtime.append(down)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    final = rig.desire({"level": 999_999}) and 999_999
    desired.append(final)
    started = time.monotonic()
    failures = []
    try:
        wait_for(lambda: rig.reported().get("level") == final, timeout=30, interval=0.1, what="the final report")
    except AssertionError:
        failures.append(f"final reported {rig.reported().get('level')!r} != final desired {final}")
    settle = time.monotonic() - started
    never = sorted(v for v in seen if v not in desired)
    if never:
        failures.append(f"reported values never desired: {never[:10]}")
    return {"restarts": restarts, "desired_changes": len(desired), "distinct_reported": len(seen),
            "never_desired_reported": len(never), "final_report_s": round(settle, 2),
            "broker_down_s_total": round(sum(downtime), 1), "failures": failures}


def _file_level(text: str) -> set:
    try:
        value = json.loads(text).get("level")
    except (ValueError, AttributeError):
        return set()
    return {value} if value is not None else set()


# -- 3. SIGKILL of the whole agent ---------------------------------------------------------------------------

def _services(count: int, round_: int) -> dict[str, dict]:
    return {f"s{i}": {"environment": {"ROUND": str(round_)}} for i in range(count)}


def _start_checked(rig: Rig, killed: set[int], failures: list[str], label: str) -> dict | None:
    """Start the agent after a kill: it must come up, with nothing of the killed run alive."""
    rig.start_agent()
    try:
        actors = rig.wait_up(40)
    except AssertionError as exc:
        failures.append(f"{label}: the next start failed: {str(exc)[:300]}")
        actors = None
    survivors = [found for pid in sorted(killed | rig.strays()) if (found := describe(pid))]
    if survivors:
        failures.append(f"{label}: {len(survivors)} processes of a killed run survived the next start: "
                        + "; ".join(survivors[:3]))
    if actors is None:  # end the broken run and what it left, so the next round starts clean
        rig.kill_agent(whole=True)
        rig.kill_strays()
    return actors


def agent_kills(rig: Rig, mid_apply: int, at_start: int, rng: random.Random, services: int = 6) -> dict:
    """SIGKILL the agent at random points of an apply, and within its first second: every next start
    succeeds, nothing of a killed run survives it, and the device converges on the last target."""
    failures: list[str] = []
    rig.start_agent()
    rig.wait_up()
    underway_misses, round_ = 0, 0
    for round_ in range(1, mid_apply + 1):
        wanted = _services(services, round_)
        rig.post_target(wanted)
        try:
            wait_for(lambda r=round_: any(f"ROUND={r}" in c["env"] for cs in rig.containers().values() for c in cs),
                     timeout=20, interval=0.02, what="the apply underway")
        except AssertionError:
            underway_misses += 1
        time.sleep(rng.uniform(0, 0.6))  # the kill's moment within the apply
        whole = rng.random() < 0.5
        killed = rig.kill_agent(whole=whole)
        _start_checked(rig, killed, failures, f"mid-apply kill {round_} ({'every process' if whole else 'run.py'})")
    for index in range(at_start):
        rig.stop_agent()
        agent = rig.start_agent()
        if index % 2:  # from the first fork on, where a run's processes exist before its run file may
            wait_for(lambda pid=agent.pid: children_of(pid), timeout=20, interval=0.002, what="the agent's first fork")
            time.sleep(rng.uniform(0.0, 0.2))
        else:
            time.sleep(rng.uniform(0.0, 1.0))  # anywhere within the first second of the start
        killed = rig.kill_agent(whole=False)
        _start_checked(rig, killed, failures, f"kill {index + 1} within the first second")
    final = _services(services, round_)
    started = time.monotonic()
    try:
        wait_for(lambda: rig.converged_on(final), timeout=60, interval=0.2, what="convergence on the last target")
    except AssertionError:
        found = {name: [(c["status"], [e for e in c["env"] if e.startswith("ROUND")]) for c in cs]
                 for name, cs in rig.containers().items()}
        failures.append(f"not converged on round {round_}: {found}")
    converge = time.monotonic() - started
    duplicates = sum(len(cs) - 1 for cs in rig.containers().values())
    if duplicates:
        failures.append(f"{duplicates} extra containers")
    rig.stop_agent()
    integrity = rig.integrity()
    if integrity != "ok":
        failures.append(f"PRAGMA integrity_check: {integrity}")
    return {"kills_mid_apply": mid_apply, "kills_at_start": at_start, "apply_not_seen_underway": underway_misses,
            "final_converge_s": round(converge, 2), "duplicate_containers": duplicates, "integrity": integrity,
            "failures": failures}


# -- 4. the Docker engine stopped during an update -----------------------------------------------------------

def engine_outage(rig: Rig, down: float, rng: random.Random, services: int = 4) -> dict:
    """Stop the (private) dockerd during an update: shadow sync goes on, the device converges within 10 s of
    the engine's return, and no actor but the reconciler restarts."""
    failures: list[str] = []
    rig.start_agent()
    rig.wait_up()
    rig.post_target(_services(services, 1))
    wait_for(lambda: rig.converged_on(_services(services, 1)), timeout=30, what="the first target")
    before = rig.wait_up()
    rig.post_target(_services(services, 2))
    wait_for(lambda: any("ROUND=2" in c["env"] for cs in rig.containers().values() for c in cs),
             timeout=20, interval=0.02, what="the update underway")
    stopped_at = time.monotonic()
    rig.dockerd.stop()
    rig.post_target(_services(services, 3))
    synced = 0
    for value in range(1, 4):  # the shadow side does not depend on the engine
        rig.desire({"level": 500 + value})
        try:
            wait_for(lambda v=500 + value: rig.reported().get("level") == v, timeout=10, interval=0.1,
                     what="a shadow change reported while the engine is down")
            synced += 1
        except AssertionError:
            failures.append(f"shadow change {500 + value} not reported while the engine was down")
    time.sleep(max(0.0, down - (time.monotonic() - stopped_at)))  # the outage's length
    rig.dockerd.start()
    back_at = time.monotonic()
    try:
        wait_for(lambda: rig.converged_on(_services(services, 3)), timeout=90, interval=0.1,
                 what="convergence after the engine's return")
    except AssertionError:
        failures.append("never converged after the engine came back")
    converge = time.monotonic() - back_at
    if converge > 10:
        failures.append(f"converged {converge:.1f} s after the engine came back (promise: <= 10 s)")
    after = rig.wait_up()
    moved = sorted(n for n in before if n != "reconciler" and
                   (after[n]["pid"] != before[n]["pid"] or after[n]["restarts"] != before[n]["restarts"]))
    if moved:
        failures.append(f"restarted during the engine outage: {', '.join(moved)}")
    return {"engine_down_s": round(back_at - stopped_at, 1), "converged_s_after_return": round(converge, 2),
            "shadow_changes_synced_while_down": synced, "reconciler_restarts":
            after["reconciler"]["restarts"] - before["reconciler"]["restarts"], "other_actors_restarted": len(moved),
            "failures": failures}


# -- 5. hostile MQTT payloads and garbage HTTP ----------------------------------------------------------------

class _EchoCounter(MqttProbe):
    """Counts the echoes of its own ``sent`` (topic, payload) pairs, keeping nothing (a flood of large payloads);
    what the cloud or the agent publishes on the same topics is not counted."""

    def __init__(self, port: int, sent: set[tuple[str, bytes]]):
        super().__init__(port)
        self._sent = {hash(pair) for pair in sent}
        self.count = 0

    def _on_message(self, client, topic, payload, qos, properties) -> int:
        if hash((topic, bytes(payload))) in self._sent:
            with self._changed:
                self.count += 1
        return 0


def _memory(rig: Rig, samples: int = 12, part: str = "Pss") -> int:
    """The agent's PSS in KiB: the least of samples over 3 s, so a short-lived engine worker (the reconciler
    starts one for every engine read, its drift reads included) is not counted. A sample counts only if the
    agent's processes were the same before and after it: a process forked or ended while the sum is read
    moves shared pages' shares between processes read and not yet read."""
    found = []
    for _ in range(samples):
        pids = rig.agent_pids()
        total = sum(pss_kib_of(pid, part) for pid in pids)
        if rig.agent_pids() == pids:
            found.append(total)
        time.sleep(0.25)
    return min(found) if found else rig.pss_kib(part)


def _flood(rig: Rig, topics: list[str], kinds: list[bytes], payloads: int) -> float:
    """``payloads`` hostile payloads, round-robin over the topics and then the kinds (``len(topics) *
    len(kinds)`` of them is each kind once on each topic); the seconds until the broker echoed them all."""
    started = time.monotonic()
    with _EchoCounter(rig.broker.port, {(topic, kind) for topic in topics for kind in kinds}) as probe:
        probe.subscribe(*topics)
        for index in range(payloads):
            probe.publish(topics[index % len(topics)], kinds[(index // len(topics)) % len(kinds)])
            # at most 10 in flight: the broker disconnects a client that exceeds its receive maximum (20)
            wait_for(lambda sent=index + 1: probe.count >= sent - 10, timeout=60, interval=0.001, what="the flood")
        wait_for(lambda: probe.count >= payloads, timeout=120, interval=0.05, what="the flood delivered")
    return time.monotonic() - started


def _hostile_desired(rig: Rig) -> list[int]:
    """The flood's values through the cloud, as a buggy or hostile operator would desire them (AWS answers 400)."""
    statuses = []
    for raw in (b'{"state": {"desired": {"level": 18446744073709551616}}}', b'{"state": {"desired": {"level": 1e999}}}',
                b'{"state": {"desired": {"mode": "\\ud800"}}}'):
        statuses.append(rig.admin().update_shadow(rig.owner, raw).status)
        time.sleep(0.5)  # the moment of the next one: each gets its own delta and read
    return statuses


def _garbage(rig: Rig, wanted: dict, app_name: str) -> float:
    """Every kind of garbage HTTP answer on GET and on PATCH: a pending report (a new appName: no container
    changes) meets every kind on PATCH, while the poller, pushed by poll-now notices, meets every kind on GET.
    The front's counts are cumulative: call it with a new ``app_name`` and the front's record cleared."""
    rig.front.serve_garbage({"PATCH"})
    rig.post_target(wanted, app_name=app_name)
    started = time.monotonic()
    wait_for(lambda: rig.front.kinds_served("PATCH"), timeout=30, what="the report to meet the garbage")
    rig.front.serve_garbage({"GET", "PATCH"})
    with MqttProbe(rig.broker.port) as notices:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not all(len(rig.front.kinds_served(m)) == len(GARBAGE)
                                                      for m in ("GET", "PATCH")):
            notices.publish(poll_now_topic(rig.owner), b"")
            time.sleep(0.1)  # the notices' pace (the poller's min_gap is 0.05 s)
    rig.front.serve_garbage(set())
    return time.monotonic() - started


def hostile_input(rig: Rig, payloads: int, rng: random.Random, services: int = 3) -> dict:
    """Hostile payloads on every topic the agent subscribes to, then every kind of garbage HTTP answer to the
    poller and the reporter: no crash, no container touched, shadow and target sync still work after, and the
    flood leaves memory within 5 % of where it started.

    Memory is measured from after a warm-up: each hostile kind once on each topic, the hostile desired values
    once, and one pass of every garbage kind (its one-time cost is the figure ``pss_kib_warm_up``). A process's
    first meeting with an input costs it memory once: glibc keeps its heap's high-water mark after large payloads
    and bodies (the poller's and the reporter's heap, the listener's MQTT thread's arena), and first use copies
    pages the process shared with the one it was forked from. Measured on 2026-12-01: the warm-up costs 4-20
    MiB, after which 2,000, 20,000 or 40,000 payloads and a second garbage pass add about 2 MiB; the 5 % are
    what the flood itself may add.
    """
    failures: list[str] = []
    rig.start_agent()
    rig.wait_up()
    wanted = _services(services, 1)
    rig.post_target(wanted)
    wait_for(lambda: rig.converged_on(wanted), timeout=30, what="the target")
    rig.desire({"level": 1})
    wait_for(lambda: rig.reported().get("level") == 1, timeout=20, what="the first report")
    topics = [*subscriptions("aws", shadow_topics("aws", rig.owner)), poll_now_topic(rig.owner)]
    kinds = hostile_payloads(rng)

    started = _memory(rig)
    _flood(rig, topics, kinds, len(topics) * len(kinds))
    _hostile_desired(rig)
    _garbage(rig, wanted, "warm-up")
    rig.front.reset()
    etag = rig.post_target(wanted, app_name="warmed-up")
    wait_for(lambda: rig.reported_etag() == etag, timeout=30, interval=0.1, what="the report after the warm-up")
    before = rig.wait_up()
    containers = {n: (c[0]["id"], c[0]["started"]) for n, c in rig.containers().items()}
    baseline = _memory(rig)
    baseline_anon = _memory(rig, part="Pss_Anon")
    by_pid = {pid: pss_kib_of(pid) for pid in rig.agent_pids()}

    flood = _flood(rig, topics, kinds, payloads)
    statuses = _hostile_desired(rig)
    after_flood = _settled(rig, 20) or {a["name"]: a for a in (rig.status() or {}).get("actors", [])}
    flood_restarts = sum(after_flood.get(n, {}).get("restarts", 0) - before[n]["restarts"] for n in before)

    garbage = _garbage(rig, wanted, "renamed")
    served = {m: len(rig.front.kinds_served(m)) for m in ("GET", "PATCH")}
    unserved = {m: sorted(set(GARBAGE) - rig.front.kinds_served(m)) for m in ("GET", "PATCH")}
    held = max((s.held for s in rig.front.served), default=0.0)

    # a garbage 2xx may have taken the pending report: a new change must get through
    etag = rig.post_target(wanted, app_name="renamed-again")
    rig.desire({"level": 2})
    for what, check in (("a shadow change after the flood", lambda: rig.reported().get("level") == 2),
                        ("a new target reported after the garbage", lambda: rig.reported_etag() == etag)):
        try:
            wait_for(check, timeout=30, interval=0.1, what=what)
        except AssertionError:
            failures.append(f"{what}: never happened")
    after = _settled(rig, 30) or {a["name"]: a for a in (rig.status() or {}).get("actors", [])}
    crashed = {n: (after.get(n, {}).get("restarts", 0) - before[n]["restarts"]) for n in before}
    crashed = {n: k for n, k in crashed.items() if k}
    moved = sorted(n for n in before if after.get(n, {}).get("pid") != before[n]["pid"])
    if crashed or moved:
        failures.append(f"crashes: {crashed or 'none counted'}; new pids: {moved}")
    now = {n: (c[0]["id"], c[0]["started"]) for n, c in rig.containers().items() if c}
    touched = sorted(n for n in set(containers) | set(now) if containers.get(n) != now.get(n))
    if touched:
        failures.append(f"containers touched: {[(n, containers.get(n), now.get(n)) for n in touched]}")
    try:
        final = wait_for(lambda: (m := _memory(rig)) <= baseline * 1.05 and m, timeout=20, interval=0.5,
                         what="memory back")
    except AssertionError:
        final = _memory(rig)
        failures.append(f"memory {baseline // 1024} MiB -> {final // 1024} MiB (more than 5 % above)")
    final_anon = _memory(rig, part="Pss_Anon")
    names = {actor["pid"]: name for name, actor in before.items()}
    if rig.agent is not None:
        names[rig.agent.pid] = "run.py"
    grown = {names.get(pid, f"other {pid}"): pss_kib_of(pid) - kib for pid, kib in by_pid.items()
             if pid in rig.agent_pids()}  # the actors, run.py, and thespian's admin and logger, the supervisor
    new_processes = {pid: pss_kib_of(pid) for pid in rig.agent_pids() - set(by_pid)}  # engine workers
    return {"payloads": payloads, "payload_kinds": len(kinds), "topics": len(topics), "flood_s": round(flood, 1),
            "http_garbage_kinds": len(GARBAGE), "garbage_kinds_served": served,
            "garbage_kinds_unserved": unserved, "garbage_s": round(garbage, 1),
            "longest_garbage_answer_held_s": round(held, 1), "cloud_answers_to_hostile_desired": statuses,
            "restarts_after_flood": flood_restarts,
            "restarts": sum(crashed.values()),
            "actors_with_new_pid": len(moved), "containers_touched": len(touched), "pss_kib_before": baseline,
            "pss_kib_after": final, "pss_kib_warm_up": baseline - started,
            "pss_change_pct": round(100 * (final - baseline) / baseline, 1),
            "pss_anon_kib_before": baseline_anon, "pss_anon_kib_after": final_anon,
            "pss_anon_change_pct": round(100 * (final_anon - baseline_anon) / baseline_anon, 1),
            "pss_kib_growth_by_process": grown, "pss_kib_of_new_processes": new_processes,
            "failures": failures}
