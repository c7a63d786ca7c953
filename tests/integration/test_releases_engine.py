"""Releases on the real Docker engine (persistence + reconciler in a running actor system): health-gated
commit, rollback to the committed release, the failure budget, update locks, hand-over, and a SIGKILL of
the whole agent in the middle of a rollback.

Health checks use short intervals so the suite stays fast; the image is the static busybox one.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import threading
import time

import pytest

import conf
import messages
from actors.runtime.processes import group_members, reap_children
from actors.runtime.system import AgentSystem
from actors.target.engine.adapter import LABEL_CONFIG_HASH, LOCK_FILE, LOCK_LABEL, lock_path
from actors.target.release import release_from_json
from messages.bus.engine import ReconcileNow
from messages.bus.target import RELEASE_KEY
from messages.protocol.target_state import config_hash, parse_target_state
from store import Store
from tests.integration.test_reconciler_engine import IMAGE_2, Device, document, recorder, set_target
from tests.integration.test_reconciler_plan_cli import run as run_cli
from tests.integration.test_supervision import agent_config
from tests.support.polling import wait_for

SETTLE = 1.0
TIMEOUT = 20.0
RUN = "trap 'exit 0' TERM; sleep 86400 & wait"
HEALTHY = {"command": ["/bin/sh", "-c", f"mkdir -p /tmp && touch /tmp/ok; {RUN}"],  # the image has no /tmp
           "healthcheck": {"test": ["CMD", "/bin/sh", "-c", "test -f /tmp/ok"], "interval": "0.3s",
                           "retries": 1}}
UNHEALTHY = {"command": ["/bin/sh", "-c", RUN],
             "healthcheck": {"test": ["CMD", "/bin/sh", "-c", "echo no ok file; test -f /tmp/ok"],
                             "interval": "0.3s", "retries": 1}}


class ReleaseDevice(Device):
    def __init__(self, docker_client, tmp_path, port):
        super().__init__(docker_client, tmp_path)
        self.config = agent_config(tmp_path, port, {}, restart_base_delay=0.2, restart_max_delay=1.0)
        self.config["device"]["uuid"] = self.owner
        self.config["update"].update(settle_seconds=SETTLE, timeout=TIMEOUT, lock_dir=str(tmp_path / "locks"))
        shipped = conf.defaults("agent")["actors"]
        self.config["actors"] = {
            "persistence": shipped["persistence"],
            "reconciler": {**shipped["reconciler"], "settings": {
                "drift_interval": 30.0, "retry_base": 0.2, "retry_max": 0.5, "release_tick": 0.2}},
            "recorder": recorder(self)}
        self.systems: list[AgentSystem] = []

    def start(self) -> AgentSystem:
        system = AgentSystem(self.config)
        self.systems.append(system)
        system.start()
        return system

    def report(self) -> dict:
        observed = self.messages("CurrentStateObserved")
        return observed[-1]["state"] if observed else {}

    def release(self) -> dict:
        return self.report().get("release", {})

    def wait_release(self, status: str, timeout: float = TIMEOUT + 10, **expected: str) -> dict:
        return wait_for(lambda: (r := self.release()).get("status") == status
                        and all(r.get(k) == v for k, v in expected.items()) and r,
                        timeout=timeout, what=f"release {status} {expected}")

    def hashes(self) -> dict[str, set[str]]:
        """service name -> the config hashes of its running containers."""
        return {name: {c.labels[LABEL_CONFIG_HASH] for c in containers if c.status == "running"}
                for name, containers in self.containers().items()}

    def stored_release(self):
        with Store.open(self.db, readonly=True) as store:
            return release_from_json(store.get(RELEASE_KEY))


def hash_of(doc: dict, app_id: str = "1", service: str = "web") -> str:
    return config_hash(parse_target_state(doc).app(app_id).service(service))


@pytest.fixture
def device(tmp_path, port, docker_client, test_images):
    made = ReleaseDevice(docker_client, tmp_path, port)
    yield made
    for system in made.systems:
        system.stop()
    made.remove_everything()


def test_a_healthy_target_is_committed_and_a_failing_one_rolled_back_and_not_applied_again(device):
    system = device.start()
    good = document({"1": {"web": HEALTHY}})
    set_target(system, good, '"good"')
    device.wait_release("done", running='"good"')
    assert device.stored_release().committed_etag == '"good"'

    bad = document({"1": {"web": {**UNHEALTHY, "image": IMAGE_2}}})
    started = time.monotonic()
    set_target(system, bad, '"bad"')
    wait_for(lambda: device.release().get("status") == "applying", what="the bad release underway")
    rolled = device.wait_release("rolled_back", failed_target='"bad"', running='"good"')
    assert time.monotonic() - started < TIMEOUT + SETTLE
    assert rolled["failed_service"] == "1/web" and "unhealthy" in rolled["reason"], rolled
    assert "no ok file" in rolled["reason"]  # the health check's last output
    wait_for(lambda: device.hashes() == {"web": {hash_of(good)}}, what="the previous config running again")
    assert device.report()["apps"]["1"]["update_status"] == "rolled_back"

    # The same target again (the cloud re-serves it): not applied, whatever the reconciler re-reads.
    set_target(system, bad, '"bad"')
    quiet_until = time.monotonic() + 3.0
    while time.monotonic() < quiet_until:
        system.asys.tell(system.supervisor, messages.encode(ReconcileNow("test")))
        assert hash_of(bad) not in set().union(*device.hashes().values())
        time.sleep(0.2)  # the pace of the re-reads asked for; the assertion is on every one of them
    assert device.release()["status"] == "rolled_back"

    # A different target is applied at once.
    newer = document({"1": {"web": {**HEALTHY, "image": IMAGE_2}}})
    set_target(system, newer, '"newer"')
    device.wait_release("done", running='"newer"')
    assert device.hashes() == {"web": {hash_of(newer)}}
    assert "failed_target" not in device.release()


def test_a_container_that_exits_rolls_back_with_its_exit_code(device):
    system = device.start()
    good = document({"1": {"web": {}}})
    set_target(system, good, '"good"')
    device.wait_release("done", running='"good"')
    set_target(system, document({"1": {"web": {"command": ["/bin/sh", "-c", "exit 3"], "restart": "no"}}}),
               '"exits"')
    rolled = device.wait_release("rolled_back", failed_target='"exits"')
    assert "code 3" in rolled["reason"], rolled
    wait_for(lambda: device.hashes() == {"web": {hash_of(good)}}, what="the previous config running again")


def test_plan_shows_the_release_state_and_plans_the_committed_release_after_a_rollback(device, capfd):
    system = device.start()
    good = document({"1": {"web": HEALTHY}})
    set_target(system, good, '"good"')
    device.wait_release("done", running='"good"')
    set_target(system, document({"1": {"web": UNHEALTHY}}), '"bad"')
    device.wait_release("rolled_back", failed_target='"bad"')
    wait_for(lambda: {name: [(c.labels[LABEL_CONFIG_HASH], c.status) for c in found]
                      for name, found in device.containers().items()} == {"web": [(hash_of(good), "running")]},
             what="the rollback done")
    capfd.readouterr()
    assert run_cli(device.config, "plan", "--json") == 0
    shown = json.loads(capfd.readouterr().out)
    assert shown["release"]["status"] == "rolled_back" and shown["release"]["applies"] == "committed"
    # The committed release runs: nothing to do.
    assert shown["converged"] and shown["steps"] == [], (shown["steps"], shown["services"])
    assert run_cli(device.config, "plan") == 0
    text = capfd.readouterr().out
    assert 'release: rolled_back; running "good"; target "bad" failed (1/web): 1/web: unhealthy' in text


def test_a_first_install_that_fails_is_retried_and_reported(device):
    device.config["actors"]["reconciler"]["settings"].update(retry_base=0.3, retry_max=0.6)
    system = device.start()
    set_target(system, document({"1": {"web": UNHEALTHY}}), '"first"')
    failed = device.wait_release("failed", failed_target='"first"')
    assert "unhealthy" in failed["reason"]
    assert device.report()["apps"]["1"]["update_status"] == "failed"
    wait_for(lambda: device.stored_release().attempts >= 2, what="a retry that failed again")


def test_a_held_lock_defers_the_update_until_it_is_released(device):
    system = device.start()
    locking = {"command": ["/bin/sh", "-c", f"touch /tmp/fleetlet/{LOCK_FILE}; {RUN}"],
               "labels": {LOCK_LABEL: "true"}}
    set_target(system, document({"1": {"web": locking}}), '"v1"')
    device.wait_release("done", running='"v1"')
    lock = pathlib.Path(lock_path(device.config["update"]["lock_dir"], device.owner, "1")) / LOCK_FILE
    assert lock.exists()
    first = device.running_ids()["web"]

    newer = document({"1": {"web": {**locking, "environment": {"V": "2"}}}})
    set_target(system, newer, '"v2"')
    device.wait_release("locked", applying='"v2"')
    assert device.report()["apps"]["1"]["update_status"] == "locked"
    assert device.running_ids()["web"] == first  # not stopped while the lock is held
    lock.unlink()
    device.wait_release("done", running='"v2"')
    assert device.hashes() == {"web": {hash_of(newer)}}


def test_a_hand_over_keeps_one_instance_running_throughout(device):
    system = device.start()
    old = document({"1": {"web": {**HEALTHY, "update_strategy": "hand-over"}}})
    set_target(system, old, '"old"')
    device.wait_release("done", running='"old"')
    gaps: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not device.hashes().get("web"):
                gaps.append(time.monotonic())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        newer = document({"1": {"web": {**HEALTHY, "image": IMAGE_2, "update_strategy": "hand-over"}}})
        set_target(system, newer, '"new"')
        device.wait_release("done", running='"new"')
    finally:
        stop.set()
        watcher.join()
    assert gaps == []
    assert device.hashes() == {"web": {hash_of(newer)}}


def test_a_hand_over_whose_new_container_never_gets_ready_is_removed(device):
    system = device.start()
    old = document({"1": {"web": {**HEALTHY, "update_strategy": "hand-over"}}})
    set_target(system, old, '"old"')
    device.wait_release("done", running='"old"')
    old_id = device.running_ids()["web"]
    set_target(system, document({"1": {"web": {**UNHEALTHY, "update_strategy": "hand-over"}}}), '"bad"')
    device.wait_release("rolled_back", failed_target='"bad"')
    wait_for(lambda: {name: [(c.id, c.status) for c in found] for name, found in device.containers().items()}
             == {"web": [(old_id, "running")]}, what="the new container gone, the old one kept")


def power_cut(system: AgentSystem) -> None:
    for pgid in system.pgids:  # as a power cut would: every agent process at once
        os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: not any(group_members(pgid) for pgid in system.pgids), what="the agent gone")
    reap_children()


def test_sigkill_of_the_whole_agent_mid_update_ends_in_the_new_release_committed(device):
    device.config["actors"]["reconciler"]["settings"]["max_parallel"] = 1  # a longer update to interrupt
    system = device.start()
    services = {f"s{index}": {**HEALTHY, "environment": {"I": str(index)}} for index in range(4)}
    set_target(system, document({"1": services}), '"v1"')
    device.wait_release("done", running='"v1"')
    newer = document({"1": {name: {**config, "image": IMAGE_2} for name, config in services.items()}})
    set_target(system, newer, '"v2"')
    new_hashes = {name: {hash_of(newer, "1", name)} for name in services}
    wait_for(lambda: any(hashes & new_hashes[name] for name, hashes in device.hashes().items())
             and device.hashes() != new_hashes, interval=0.005, what="the update underway")
    power_cut(system)

    device.start()
    device.wait_release("done", running='"v2"')
    assert device.hashes() == new_hashes and all(len(c) == 1 for c in device.containers().values())


def test_sigkill_of_the_whole_agent_mid_rollback_ends_in_one_release(device):
    system = device.start()
    services = {f"s{index}": {**HEALTHY, "environment": {"I": str(index)}} for index in range(4)}
    good = document({"1": services})
    set_target(system, good, '"good"')
    device.wait_release("done", running='"good"')
    bad = document({"1": {**{name: {**config, "image": IMAGE_2} for name, config in services.items()},
                          "s0": {**UNHEALTHY, "image": IMAGE_2, "environment": {"I": "0"}}}})
    set_target(system, bad, '"bad"')
    good_hashes = {name: {hash_of(good, "1", name)} for name in services}
    # Mid-rollback: the release is rolled back in the store, some containers are still the bad release's.
    wait_for(lambda: device.stored_release().blocked is not None and device.hashes() != good_hashes,
             interval=0.005, timeout=TIMEOUT + 10, what="the rollback underway")
    power_cut(system)

    device.start()
    wait_for(lambda: device.hashes() == good_hashes and all(
        len(c) == 1 for c in device.containers().values()), timeout=30, what="the committed release alone")
    device.wait_release("rolled_back", failed_target='"bad"', running='"good"')


def test_a_crash_loop_after_commit_is_reported_not_rolled_back(device):
    system = device.start()
    set_target(system, document({"1": {"web": {}}}), '"v1"')
    device.wait_release("done", running='"v1"')
    crashing = document({"1": {"web": {"command": ["/bin/sh", "-c", f"test -f /crash && exit 5; {RUN}"]}}})
    set_target(system, crashing, '"v2"')
    device.wait_release("done", running='"v2"')
    web = device.docker.containers.get(device.running_ids()["web"])
    web.exec_run(["/bin/sh", "-c", "echo > /crash"])
    web.kill()  # the engine restarts it (restart: always), and it now exits 5 at once, again and again

    def reported() -> dict | None:  # seen at the next read: a drift check, here asked for at once
        system.asys.tell(system.supervisor, messages.encode(ReconcileNow("test")))
        row = device.report()["apps"]["1"]["services"]["web"]
        return row if row.get("crash_loop") else None

    row = wait_for(reported, timeout=15, interval=0.2, what="the crash loop reported")
    assert row["exit_code"] == "5" and int(row["restart_count"]) >= 1 and float(row["crash_loop_since"]) > 0
    assert device.release()["status"] == "done" and device.release()["running"] == '"v2"'
    assert {c.labels[LABEL_CONFIG_HASH] for c in device.containers()["web"]} == {hash_of(crashing)}  # not v1


def test_the_failure_budget_tries_the_target_again_before_rolling_back(device):
    device.config["update"]["max_attempts"] = 2
    system = device.start()
    set_target(system, document({"1": {"web": HEALTHY}}), '"good"')
    device.wait_release("done", running='"good"')
    set_target(system, document({"1": {"web": UNHEALTHY}}), '"bad"')
    device.wait_release("rolled_back", failed_target='"bad"')
    releases = [row["state"].get("release", {}) for row in device.messages("CurrentStateObserved")]
    retried = [r for r in releases if r.get("status") == "applying" and r.get("failed_target") == '"bad"']
    assert retried, releases  # the first failure was reported while the second attempt ran
