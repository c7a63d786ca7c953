"""Multi-actor tests of the root supervisor on the real multiprocTCPBase: one process per actor."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

import conf
import messages
from actors.runtime.processes import group_members
from actors.runtime.system import AgentSystem
from messages.bus.target import PollNow
from tests.support.polling import wait_for
from tests.support.probe_actors import Boom, Probe, Quit, recorded_rows
from tests.support.sockets import listening_sockets


def agent_config(tmp_path, port, actors, **supervisor) -> dict:
    overrides = [f"store.path={tmp_path}/agent.db", f"agent.admin_port={port}", "agent.stop_timeout=5.0",
                 f"api.socket={tmp_path}/api.sock", f"api.key_file={tmp_path}/api.key"]
    overrides += [f"supervisor.{key}={value}" for key, value in supervisor.items()]
    config = conf.load("agent", None, overrides)
    config["actors"] = actors
    return config


def probe_actors(tmp_path) -> dict:
    return {
        "recorder": {"class": "tests.support.probe_actors.Recorder", "subscribes": ["Probe"],
                     "settings": {"path": str(tmp_path / "recorded.jsonl")}},
        "bystander": {"class": "tests.support.probe_actors.Idle", "subscribes": ["Quit"]},
        "crasher": {"class": "tests.support.probe_actors.Crasher", "subscribes": ["Boom"]},
    }


@pytest.fixture
def running_agent(tmp_path, port, start_agent):
    def start(actors=None, **supervisor):
        config = agent_config(tmp_path, port, actors or probe_actors(tmp_path), **supervisor)
        return start_agent(config, wait_running=True)

    return start


def children(system) -> dict:
    return {c.name: c for c in system.status().children}


def recorded(tmp_path) -> list[dict]:
    return recorded_rows(tmp_path / "recorded.jsonl")


def publish(system, msg) -> None:
    system.asys.tell(system.supervisor, messages.encode(msg))


def test_messages_are_routed_by_type_to_subscribers(running_agent, tmp_path):
    system = running_agent()
    publish(system, Probe(1))
    rows = wait_for(lambda: recorded(tmp_path), what="the probe to be recorded")
    assert rows == [{"actor": "recorder", "pid": children(system)["recorder"].pid, "type": "Probe", "seq": 1}]


def test_sigkilled_actor_is_restarted_and_gets_what_was_sent_meanwhile(running_agent, tmp_path):
    system = running_agent()
    before = children(system)
    os.kill(before["recorder"].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    publish(system, Probe(7))  # sent while the recorder is dead or restarting

    rows = wait_for(lambda: recorded(tmp_path), timeout=5, what="the probe sent during the restart")
    after = children(system)
    assert after["recorder"].pid not in (None, before["recorder"].pid)
    assert after["recorder"].restarts == 1
    assert rows[-1]["seq"] == 7 and rows[-1]["pid"] == after["recorder"].pid
    assert time.monotonic() - killed_at < 2.0
    assert after["bystander"].pid == before["bystander"].pid
    assert after["crasher"].pid == before["crasher"].pid
    assert after["bystander"].restarts == 0


def test_messages_reaching_a_crashing_actor_go_to_its_next_instance(running_agent, tmp_path):
    actors = {"recorder": {"class": "tests.support.probe_actors.FragileRecorder", "subscribes": ["Probe", "Boom"],
                           "settings": {"path": str(tmp_path / "recorded.jsonl")}}}
    system = running_agent(actors)
    first = children(system)["recorder"].pid
    publish(system, Boom("while probes queue up"))
    for seq in range(40):
        publish(system, Probe(seq))  # delivered to the crashing process, or held once it is known dead

    rows = wait_for(lambda: (r := recorded(tmp_path)) and len({row["seq"] for row in r}) == 40 and r, timeout=10,
                    what="every probe, none lost in the crash")
    after = children(system)["recorder"]
    assert after.restarts == 1 and after.pid != first
    assert {row["pid"] for row in rows} == {after.pid}  # the crashing one handled none of them


def test_a_blocked_child_does_not_make_the_supervisor_deaf(running_agent, tmp_path):
    """Notices for a child stuck in a handler are coalesced: one in flight, one waiting, none piling up."""
    release = tmp_path / "release"
    actors = {"stuck": {"class": "tests.support.probe_actors.Stuck", "subscribes": ["PollNow"],
                        "settings": {"path": str(tmp_path / "recorded.jsonl"), "release": str(release)}}}
    system = running_agent(actors)
    publish(system, PollNow("first"))
    wait_for(lambda: recorded(tmp_path), what="the child to block in its first notice")
    for index in range(1500):
        publish(system, PollNow(f"notice {index}"))
    started = time.monotonic()
    status = system.status(timeout=5.0)
    assert status is not None and time.monotonic() - started < 3.0, "the supervisor did not answer at once"
    assert {c.name: c for c in status.children}["stuck"].superseded > 0
    release.touch()
    rows = wait_for(lambda: (r := recorded(tmp_path)) and r[-1]["reason"] == "notice 1499" and r,
                    what="the newest notice after the release")
    assert [row["reason"] for row in rows] == ["first", "notice 1499"]


def test_os_exit_and_segfault_in_an_actor_are_seen(running_agent):
    system = running_agent()
    pid = children(system)["bystander"].pid
    os.kill(pid, signal.SIGSEGV)  # as a crash in a C extension would raise it
    wait_for(lambda: children(system)["bystander"].pid not in (None, pid), timeout=5,
             what="restart after a segfault")
    assert children(system)["bystander"].restarts == 1
    pid = children(system)["bystander"].pid
    publish(system, Quit(3))
    wait_for(lambda: children(system)["bystander"].pid not in (None, pid), timeout=5,
             what="restart after os._exit")
    assert children(system)["bystander"].restarts == 2


def test_crashing_handler_restarts_with_backoff_then_escalates(running_agent, tmp_path):
    actors = probe_actors(tmp_path)
    actors["crasher"]["on_limit"] = "escalate"
    system = running_agent(actors, restart_base_delay=0.1, intensity=3, period=30.0)
    restart_seen_at = []
    for attempt in range(4):
        restarts = children(system)["crasher"].restarts
        publish(system, Boom(f"attempt {attempt}"))
        if attempt < 3:
            wait_for(lambda restarts=restarts: children(system)["crasher"].restarts == restarts + 1 and
                     children(system)["crasher"].state == "running", timeout=5, what="restart")
            restart_seen_at.append(time.monotonic())
    status = wait_for(lambda: (s := system.status()) and s.state == "escalated" and s, timeout=5,
                      what="escalation")
    crasher = {c.name: c for c in status.children}["crasher"]
    assert "boom: attempt 3" in crasher.last_error
    assert "crasher exceeded 3 restarts" in status.reason
    gaps = [b - a for a, b in zip(restart_seen_at, restart_seen_at[1:], strict=False)]
    assert gaps[1] > gaps[0] * 1.3 or gaps[1] >= 0.35  # delays 0.1, 0.2, 0.4 s: backoff grows


def test_cooldown_keeps_the_others_running(running_agent):
    actors = {"crasher": {"class": "tests.support.probe_actors.Crasher", "subscribes": ["Boom"],
                          "on_limit": "cooldown"},
              "bystander": {"class": "tests.support.probe_actors.Idle"}}
    system = running_agent(actors, restart_base_delay=0.05, intensity=1, period=30.0, cooldown=1.0)
    bystander = children(system)["bystander"].pid
    publish(system, Boom("one"))
    wait_for(lambda: children(system)["crasher"].restarts == 1 and
             children(system)["crasher"].state == "running", timeout=5, what="first restart")
    publish(system, Boom("two"))
    wait_for(lambda: children(system)["crasher"].state == "failed", timeout=5, what="failed state")
    assert system.status().state == "running"
    wait_for(lambda: children(system)["crasher"].state == "running", timeout=5, what="retry after cooldown")
    assert children(system)["bystander"].pid == bystander


def test_by_default_a_child_past_its_limit_cools_down_and_no_sibling_restarts(running_agent, tmp_path):
    system = running_agent(restart_base_delay=0.05, intensity=1, period=30.0, cooldown=1.0)  # on_limit: default
    before = children(system)
    publish(system, Boom("one"))
    wait_for(lambda: children(system)["crasher"].restarts == 1 and
             children(system)["crasher"].state == "running", timeout=5, what="first restart")
    publish(system, Boom("two"))
    wait_for(lambda: children(system)["crasher"].state == "failed", timeout=5, what="the crasher cooling down")
    assert system.status().state == "running"
    after = children(system)
    assert {name: (c.pid, c.restarts) for name, c in after.items() if name != "crasher"} == \
        {name: (c.pid, c.restarts) for name, c in before.items() if name != "crasher"}


def test_every_agent_socket_listens_on_loopback_only(running_agent):
    system = running_agent()
    pids = system.pids()
    assert len(pids) >= 5  # admin, logger, supervisor and three children
    listening = listening_sockets(pids)
    assert listening, "no listening socket found"
    assert all(addr.startswith("127.") for addr, _ in listening), listening


def test_restart_after_sigkill_of_the_whole_agent_ends_the_old_actors(tmp_path, port):
    config = agent_config(tmp_path, port, probe_actors(tmp_path))
    first = AgentSystem(config)
    first.start()
    old_pids = first.pids()
    # Simulate the main process dying abruptly: forget the system without stopping it.
    first.asys = None
    second = AgentSystem(config)
    try:
        second.start()
        assert not any(pid in second.pids() for pid in old_pids)
        assert all(not group_members(pgid) for pgid in first.pgids)
    finally:
        second.stop()


def test_stopping_the_agent_ends_only_its_own_processes(running_agent):
    # A neighbour in its own session, as a broker or database started by the same parent would be.
    neighbour = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        system = running_agent()
        system.stop()
        assert neighbour.poll() is None, "the agent's stop killed a process that is not its own"
    finally:
        neighbour.kill()
        neighbour.wait()
