"""A local process that is not the agent gets nothing unpickled, whatever it sends to whichever agent port.

The intruder runs as uid 65534, as a compromised service on the device would; the agent runs as root.
"""
from __future__ import annotations

import os

import pytest

from actors.runtime.hardening import own_run_key
from actors.runtime.system import AgentStartError, AgentSystem
from tests.integration.test_supervision import agent_config, children, probe_actors, publish, recorded
from tests.support.intruder import FakeAdmin, as_nobody, pickle_frame, send_and_watch
from tests.support.polling import wait_for
from tests.support.probe_actors import Probe
from tests.support.sockets import listening_sockets

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to uid 65534 needs root")


@pytest.fixture
def agent(tmp_path, port, start_agent):
    return start_agent(agent_config(tmp_path, port, probe_actors(tmp_path)), wait_running=True)


def agent_ports(system) -> tuple[list[int], list[int]]:
    """The ports the agent's processes listen on, and the one this process's own client of the actor system
    listens on (the actors inherit that socket; only this process reads it, when it next asks)."""
    own = {port for _, port in listening_sockets([os.getpid()])}
    ports = {port for _, port in listening_sockets(system.pids())} - own
    assert system.port in ports and len(ports) >= 6, ports  # admin, logger, supervisor, three children
    return sorted(ports), sorted(own)


def test_a_pickle_frame_from_nobody_runs_nothing_and_the_agent_runs_on(agent, tmp_path):
    before = {name: c.pid for name, c in children(agent).items()}
    pids = agent.pids()
    ports, own = agent_ports(agent)
    marker = tmp_path / "marker-{port}"  # the agent, as root, could create it; nobody cannot
    outcomes = as_nobody(lambda: {port: send_and_watch(port, pickle_frame(str(marker).format(port=port)),
                                                       patience=3.0 if port in ports else 0.2)
                                  for port in ports + own})
    assert {outcomes[str(port)] for port in ports} == {"closed"}, outcomes  # dropped, and the connection cut
    children(agent)  # this process reads its own port as it asks
    assert sorted(tmp_path.glob("marker-*")) == []
    assert agent.pids() == pids and {name: c.pid for name, c in children(agent).items()} == before
    assert all(c.state == "running" and c.restarts == 0 for c in children(agent).values())
    publish(agent, Probe(1))  # and the actors still answer
    wait_for(lambda: recorded(tmp_path), what="the probe recorded after the attack")


@pytest.mark.parametrize("prefix", [
    b"9" * 40,  # digits without end: thespian buffered them all
    b"99999999999999999999>" + b"x" * 1000,  # a 20-digit length: thespian waited for 10^20 bytes
    b"9999999>" + b"x" * 1000,  # a plausible number, beyond the largest frame
], ids=["endless digits", "twenty digits", "too large"])
def test_a_length_prefix_out_of_bounds_is_cut_at_once(agent, prefix):
    ports, _ = agent_ports(agent)
    outcomes = as_nobody(lambda: {port: send_and_watch(port, prefix) for port in ports})
    assert set(outcomes.values()) == {"closed"}, outcomes
    assert all(c.state == "running" and c.restarts == 0 for c in children(agent).values())


def test_an_admin_that_is_not_this_runs_is_refused_with_the_reason(tmp_path, port):
    # What a start meets when another program binds the port between its check and the admin's start.
    marker = tmp_path / "marker"
    fake = FakeAdmin(port, str(marker))
    try:
        system = AgentSystem(agent_config(tmp_path, port, {}))
        with pytest.raises(AgentStartError, match=f"admin port {port} on 127.0.0.1 is held by a program that is "
                                                  "not this run's admin"):
            system._join(own_run_key())
        assert fake.connections > 0
    finally:
        fake.close()
    assert not marker.exists()
