"""Operating the agent from the command line: JSON logs, `run.py doctor`, `run.py install-service`."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile

import pytest

import conf
from tests.e2e.test_run_cli import ROOT, actors_up, run_py, write_agent_conf
from tests.support.polling import wait_for
from tests.support.services import missing


@pytest.fixture
def agent_conf(tmp_path, port):
    return write_agent_conf(tmp_path, port)


def test_json_logs_are_one_object_a_line(agent_conf, tmp_path):
    with open(agent_conf, "a") as fh:  # a poller that finds no cloud: warnings, with no etag yet
        fh.write('[actors.fetcher]\nclass = "actors.target.poller.Poller"\nsubscribes = ["PollNow"]\n'
                 'settings = { interval = 60.0, backoff_min = 0.1, backoff_max = 0.2 }\n')
    agent = subprocess.Popen([sys.executable, "run.py", "agent", "--config", agent_conf, "--set",
                              "agent.log_format=json", "--set", "cloud.url=http://127.0.0.1:9"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: actors_up(agent_conf), timeout=20, interval=0.3, what="agent up")
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=30)
    lines = stderr.splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(set(r) >= {"time", "level", "actor", "event"} for r in records)
    assert all(r["time"].endswith("Z") and r["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
               for r in records)
    assert any(r["actor"] == "system" and r["event"].startswith("agent running with actors") for r in records)
    assert any(r["actor"] == "fetcher" and r["level"] == "WARNING" and "cannot fetch the target state" in r["event"]
               for r in records)


# -- installation as a service -------------------------------------------------------------------------------

SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"


def verify(unit_path) -> subprocess.CompletedProcess:
    if not os.path.exists(SYSTEMD_ANALYZE):
        missing("systemd-analyze")
    return subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit_path)], capture_output=True, text=True, timeout=60)


def test_install_service_writes_a_unit_that_systemd_verifies_and_a_device_configuration(tmp_path):
    printed = run_py("install-service", "--print")
    assert printed.returncode == 0 and "Type=notify" in printed.stdout
    result = run_py("install-service", "--unit-dir", str(tmp_path / "units"), "--conf-dir", str(tmp_path / "etc"))
    assert result.returncode == 0, result.stderr
    assert "systemctl enable --now fleetlet.service" in result.stdout
    unit = tmp_path / "units" / "fleetlet.service"
    assert unit.read_text() == printed.stdout.replace("/etc/fleetlet/agent.toml", f"{tmp_path}/etc/agent.toml")
    for line in ("Type=notify", "Restart=on-failure", "WatchdogSec=60", "NoNewPrivileges=yes", "PrivateTmp=yes",
                 "ProtectSystem=full", "KillMode=mixed", "StateDirectory=fleetlet"):
        assert line in unit.read_text().splitlines()
    checked = verify(unit)
    assert checked.returncode == 0, checked.stderr
    config = conf.load("agent", str(tmp_path / "etc" / "agent.toml"))
    assert config["store"]["path"] == "/var/lib/fleetlet/agent.db"
    assert config["api"]["socket"] == "/run/fleetlet/api.sock"
    assert config["mqtt"]["key_file"] == config["cloud"]["key_file"] == "/etc/fleetlet/pki/device.key"
    again = run_py("install-service", "--unit-dir", str(tmp_path / "units"), "--conf-dir", str(tmp_path / "etc"))
    assert "kept the existing" in again.stdout  # an operator's edits survive a reinstall


def test_systemd_analyze_refuses_a_broken_unit(tmp_path):
    """The check above can fail: a unit systemd cannot run is refused."""
    broken = tmp_path / "fleetlet.service"
    broken.write_text(run_py("install-service", "--print").stdout.replace("Type=notify", "Type=nonsense")
                      .replace(sys.executable, "/nonexistent/python3"))
    assert verify(broken).returncode != 0


def test_the_agent_tells_systemd_it_is_ready_and_feeds_the_watchdog(agent_conf, tmp_path):
    path = tempfile.mktemp(prefix="fl-notify-", dir="/tmp")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    agent = subprocess.Popen([sys.executable, "run.py", "agent", "--config", agent_conf], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ,
                                                                                         "NOTIFY_SOCKET": path})
    try:
        seen = []
        while not any("WATCHDOG=1" in s for s in seen):
            seen.append(sock.recv(4096).decode())
        assert seen[0].startswith("READY=1\nSTATUS=running with actors ")
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        while (message := sock.recv(4096).decode()) == "WATCHDOG=1":
            pass
        assert message == "STOPPING=1"
        sock.close()
        os.unlink(path)
