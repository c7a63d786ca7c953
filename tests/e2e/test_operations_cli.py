"""Operating the agent from the command line: JSON logs, `run.py doctor`, `run.py install-service`."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.e2e.test_run_cli import ROOT, actors_up, write_agent_conf
from tests.support.polling import wait_for


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
