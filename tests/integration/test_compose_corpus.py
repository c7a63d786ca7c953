"""The compose corpus (tests/compose/): each file converts, passes the device policy it declares (and the
default policy refuses it by exactly those keys), converges on the real engine with every field applied as
`docker inspect` shows, plans again with zero steps, and a restarted agent (a new engine adapter reading the
engine alone) recreates nothing."""
import pathlib
import re
from dataclasses import replace

import pytest

from actors.target.engine.adapter import DEFAULT_OPTIONS, DockerEngine
from actors.target.planner import plan
from actors.target.policy import Policy, check_policy, enforce_policy
from cloud.compose import load_compose
from cloud.compose_yaml import load_compose_yaml
from messages.protocol.target_state import parse_target_state
from tests.integration.test_engine import client, converge, engine, owner  # noqa: F401  (fixtures)
from tests.support.inspect_options import differences
from tests.support.ports import free_admin_port

CORPUS = sorted((pathlib.Path(__file__).parent.parent / "compose").glob("*.yml"))
PORT_VARIABLES = re.compile(r"\$\{([A-Z0-9_]+_PORT)")


def policy_of(path: pathlib.Path) -> Policy:
    declared = load_compose_yaml(path.read_bytes()).get("x-fleetlet-policy") or {}
    return Policy(**{key: tuple(value) if isinstance(value, list) else value for key, value in declared.items()})


def free_ports_for(path: pathlib.Path) -> dict[str, str]:
    return {name: str(free_admin_port()) for name in set(PORT_VARIABLES.findall(path.read_text()))}


def test_the_corpus_has_at_least_eight_files():
    assert len(CORPUS) >= 8


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: path.stem)
def test_the_default_policy_refuses_a_file_by_exactly_the_keys_it_declares(path):
    target = parse_target_state(load_compose(path.read_bytes(), {}))  # the file's own default ports
    declared = {f"policy.{key}" for key in load_compose_yaml(path.read_bytes()).get("x-fleetlet-policy") or {}}
    assert {violation.allowed_by for violation in check_policy(target, Policy())} == declared
    assert check_policy(target, policy_of(path)) == []


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: path.stem)
def test_a_compose_file_converges_with_every_field_applied_and_stays(client, engine, owner, path):  # noqa: F811
    target = enforce_policy(parse_target_state(load_compose(path.read_bytes(), free_ports_for(path))),
                            policy_of(path))
    current, _ = converge(engine, target)
    (app,) = target.apps
    assert sorted(c.service_name for c in current.containers) == [s.service_name for s in app.services]
    for container in current.containers:
        inspected = client.api.inspect_container(container.id)
        assert inspected["State"]["Status"] == "running", (container.service_name, inspected["State"])
        assert differences(app.service(container.service_name).config, inspected) == {}, container.service_name
    assert plan(target, engine.read_current()) == []
    restarted = DockerEngine(owner, options=replace(DEFAULT_OPTIONS, timeout=20))
    try:
        again = restarted.read_current()
        assert plan(target, again) == []
        assert {c.id for c in again.containers} == {c.id for c in current.containers}
    finally:
        restarted.close()
