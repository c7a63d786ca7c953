"""`run.py plan [--json]` and `run.py poll-now` (actors.plan_cli), against the real engine and a real agent."""
from __future__ import annotations

import argparse
import json
import time
import uuid

import pytest

from actors.cli import plan as plan_cli
from actors.runtime.system import AgentSystem
from actors.target.engine.adapter import DockerEngine
from actors.target.planner import plan
from messages.protocol.target_state import parse_target_state, to_json
from store import Store
from tests.integration.test_reconciler_engine import Device, document
from tests.integration.test_supervision import agent_config
from tests.support.polling import wait_for
from tests.support.stub_cloud import StubCloud


def run(config: dict, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    plan_cli.register(parser.add_subparsers(dest="command"), lambda sub: None)
    return plan_cli.dispatch(parser.parse_args(list(argv)), config)


@pytest.fixture
def planned(tmp_path, port, docker_client, test_images):
    device = Device(docker_client, tmp_path)
    config = agent_config(tmp_path, port, {})
    config["device"]["uuid"] = device.owner
    yield config, device
    device.remove_everything()


def store_target(config: dict, doc: dict, etag: str) -> None:
    with Store.open(config["store"]["path"]) as store:
        store.save_target(to_json(parse_target_state(doc)), etag, time.time())


def test_plan_shows_the_next_steps_with_reasons_without_running_them(planned, capsys):
    config, device = planned
    store_target(config, document({"1": {"web": {}, "db": {"depends_on": ["web"]}}}), '"v1"')
    assert run(config, "plan", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["etag"] == '"v1"' and not result["converged"]
    assert [(s["action"], s["service_name"], s["reason"]) for s in result["steps"]] == [
        ("create_network", "db", "network default missing (needed by db, web)")]
    assert {row["service_name"]: row["status"] for row in result["services"]} == {"db": "pending", "web": "waiting"}
    assert device.containers() == {} and not device.docker.networks.list(filters={"name": device.owner})

    engine = DockerEngine(device.owner)
    target = parse_target_state(document({"1": {"web": {}, "db": {"depends_on": ["web"]}}}))
    while steps := plan(target, engine.read_current()):
        for step in steps:
            engine.execute(step)
    assert run(config, "plan") == 0
    assert capsys.readouterr().out == 'release: none\ntarget "v1": converged, nothing to do\n'

    device.docker.containers.get(device.running_ids()["web"]).remove(force=True)
    assert run(config, "plan") == 0
    assert capsys.readouterr().out.splitlines() == [
        "release: none",
        'target "v1": 1 step(s) would run now',
        "  create 1/web: no container",
        "services not converged:",
        "  1/web                    pending   no container"]
    engine.close()


def test_plan_without_a_target_or_a_store_says_so(tmp_path, port, capsys):
    config = agent_config(tmp_path, port, {})
    assert run(config, "plan") == 1
    assert "cannot read the agent's store" in capsys.readouterr().err
    Store.open(config["store"]["path"]).close()
    assert run(config, "plan") == 0
    assert "no target state has been received yet" in capsys.readouterr().out


def test_poll_now_reaches_the_running_agent(tmp_path, port, capfd):
    # capfd, not capsys: the actor processes started here inherit the real standard streams.
    config = agent_config(tmp_path, port, {"poller": {"class": "actors.target.poller.Poller", "subscribes": ["PollNow"],
                                                      "settings": {"interval": 60.0, "min_gap": 0.1}},
                                           "api": {"class": "actors.api.actor.Api"}})
    assert run(config, "poll-now") == 1
    assert f"no agent is answering on {tmp_path}/api.sock" in capfd.readouterr().err
    with StubCloud(lambda request: (304, {}, b"")) as cloud:
        config["cloud"]["url"] = cloud.url
        config["device"]["uuid"] = f"t-{uuid.uuid4().hex[:8]}"
        system = AgentSystem(config)
        system.start()
        try:
            wait_for(lambda: len(cloud.seen()) == 1, what="the poll at start")
            wait_for(lambda: time.monotonic() - cloud.seen()[0].at >= 0.2, what="min_gap past since that poll")
            assert run(config, "poll-now") == 0
            wait_for(lambda: len(cloud.seen()) == 2, timeout=2, what="the poll asked for")
        finally:
            system.stop()
