"""run.py against what is not the agent: a fake admin on the admin port, and the modes of the agent's files."""
from __future__ import annotations

import json
import os
import stat

import pytest

import conf
from actors.runtime.admin import AdminError, query_status
from actors.runtime.processes import group_members
from tests.e2e.test_run_cli import actors_up, run_py, start_agent, stop_agent, with_api, without_default_actors
from tests.support.intruder import FakeAdmin, as_nobody, pickle_frame, send_and_watch
from tests.support.polling import wait_for
from tests.support.sockets import listening_sockets


@pytest.fixture
def agent_conf_path(tmp_path, port):
    path = tmp_path / "agent.toml"
    # Only persistence runs (it holds the store open, with its WAL and SHM), and the local API.
    actors = without_default_actors().replace('Persistence"\nenabled = false', 'Persistence"\nenabled = true')
    actors = with_api(actors)  # and the API that status uses
    path.write_text(f'[store]\npath = "{tmp_path}/var/agent.db"\n[agent]\nadmin_port = {port}\n'
                    f"stop_timeout = 5.0\n"
                    f'[api]\nsocket = "{tmp_path}/var/api.sock"\nkey_file = "{tmp_path}/var/api.key"\n{actors}')
    return str(path)


def test_a_fake_admin_cannot_make_status_run_anything(tmp_path, port, agent_conf_path):
    """status and poll-now go through the local API's socket; with no API answering, status asks the supervisor
    over the admin port, where what answers without the run's key is named and never unpickled."""
    marker = tmp_path / "marker"
    fake = FakeAdmin(port, str(marker))
    try:
        # A run key left by a SIGKILLed agent, and a program that took the port since.
        key_file = tmp_path / "var" / "agent.db.key"
        key_file.parent.mkdir(mode=0o700)
        key_file.write_bytes(os.urandom(32))
        for command in ("status", "poll-now"):
            result = run_py(command, "--config", agent_conf_path)
            assert result.returncode == 1, result
            assert f"no agent is answering on {tmp_path}/var/api.sock" in result.stderr
        status = run_py("status", "--config", agent_conf_path)
        assert f"the program on 127.0.0.1:{port} is not this agent's admin" in status.stderr
    finally:
        fake.close()
    assert not marker.exists()


def test_the_run_key_is_needed_to_talk_to_the_agent(tmp_path, agent_conf_path):
    if os.geteuid() != 0:
        pytest.skip("dropping privileges needs root")
    agent = start_agent(agent_conf_path)
    try:
        wait_for(lambda: actors_up(agent_conf_path), timeout=20, interval=0.3, what="agent up")
        os.chmod(tmp_path, 0o755)  # nobody may reach var/, not what is inside it
        os.chmod(tmp_path / "var", 0o755)
        config = conf.load("agent", agent_conf_path, [])

        def ask():
            try:
                return repr(query_status(config))
            except AdminError as exc:
                return str(exc)

        # The CLI's own code, in a process of another user (nobody cannot run this checkout's python).
        assert "cannot read the run key" in as_nobody(ask)
    finally:
        assert stop_agent(agent) == 0


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_fresh_start_keeps_every_file_to_the_agent(tmp_path, agent_conf_path):
    agent = start_agent(agent_conf_path)
    try:
        wait_for(lambda: actors_up(agent_conf_path), timeout=20, interval=0.3, what="agent up")
        var = tmp_path / "var"
        files = {name: var / name for name in ("agent.db", "agent.db-wal", "agent.db-shm", "agent.db.run",
                                               "agent.db.key", "api.key")}
        wait_for(lambda: all(path.exists() for path in files.values()), what="the store's WAL and SHM")
        assert mode(var) == 0o700
        assert {name: oct(mode(path)) for name, path in files.items()} == {name: "0o600" for name in files}
        # The API's socket is 0660 (its group may connect; the key says what it may call), inside the 0700 var/.
        assert oct(mode(var / "api.sock")) == "0o660" and stat.S_ISSOCK(os.stat(var / "api.sock").st_mode)
        assert sorted(path.name for path in var.iterdir()) == sorted([*files, "api.sock"])  # nothing else
    finally:
        assert stop_agent(agent) == 0


def test_a_pickle_frame_from_nobody_to_the_running_agent_runs_nothing(tmp_path, agent_conf_path):
    if os.geteuid() != 0:
        pytest.skip("dropping to uid 65534 needs root")
    agent = start_agent(agent_conf_path)
    try:
        before = wait_for(lambda: actors_up(agent_conf_path), timeout=20, interval=0.3, what="agent up")
        run = json.loads((tmp_path / "var" / "agent.db.run").read_text())
        pids = [agent.pid] + [pid for pgid in map(int, run["groups"]) for pid in group_members(pgid)]
        ports = sorted({port for _, port in listening_sockets(pids)})
        marker = str(tmp_path / "marker-{port}")
        # run.py's own port too: it reads it whenever it asks the supervisor (every 2 s)
        outcomes = as_nobody(lambda: {port: send_and_watch(port, pickle_frame(marker.format(port=port)),
                                                           patience=10.0) for port in ports})
        assert set(outcomes.values()) == {"closed"}, outcomes
        assert sorted(tmp_path.glob("marker-*")) == []
        after = actors_up(agent_conf_path)
        assert {name: a["pid"] for name, a in after.items()} == {name: a["pid"] for name, a in before.items()}
        assert agent.poll() is None
    finally:
        assert stop_agent(agent) == 0
