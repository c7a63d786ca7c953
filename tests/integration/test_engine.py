import pickle
import uuid
from dataclasses import replace

import docker
import pytest

from actors.target.engine.adapter import (
    DEFAULT_OPTIONS,
    LABEL_CONFIG_HASH,
    LABEL_OWNER,
    DockerEngine,
    EngineError,
    EngineUnavailable,
)
from actors.target.model import (
    Action,
    Create,
    CreateNetwork,
    CreateVolume,
    EngineState,
    Pull,
    Remove,
    RemoveNetwork,
    RemoveVolume,
    Resource,
    Start,
    Stop,
)
from actors.target.planner import plan
from messages.protocol.target_state import TargetState, config_hash, parse_target_state

IMAGE_1 = "fleetlet-test/busybox:1"
IMAGE_2 = "fleetlet-test/busybox:2"


@pytest.fixture(scope="session")
def client(docker_client, test_images):
    return docker_client


def remove_everything_of(client, owner: str) -> None:
    owned = {"label": [f"{LABEL_OWNER}={owner}"]}
    for container in client.containers.list(all=True, filters=owned):
        container.remove(force=True)
    for network in client.networks.list(filters=owned):
        network.remove()
    for volume in client.volumes.list(filters=owned):
        volume.remove(force=True)


@pytest.fixture
def owner(client):
    owner = f"t{uuid.uuid4().hex[:10]}"
    yield owner
    remove_everything_of(client, owner)


@pytest.fixture
def engine(owner):
    engine = DockerEngine(owner, options=replace(DEFAULT_OPTIONS, timeout=20, stop_timeout=3))
    yield engine
    engine.close()


def target_of(services: dict[str, dict]) -> TargetState:
    return parse_target_state({"apps": {"1": {"appId": 1, "appName": "test", "services": [
        {"serviceName": name, "config": {"image": IMAGE_1, **config}} for name, config in services.items()]}}})


def converge(engine: DockerEngine, target: TargetState, max_batches: int = 20) -> tuple[EngineState, list]:
    """The executor loop: plan, run the batch, re-read the engine; every step must succeed."""
    batches = []
    for _ in range(max_batches):
        current = engine.read_current()
        steps = plan(target, current)
        if not steps:
            return current, batches
        batches.append([(step.action, step.service_name) for step in steps])
        for step in steps:
            engine.execute(step)
    raise AssertionError(f"not converged after {max_batches} batches: {batches[-3:]}")


def images_only(current: EngineState) -> EngineState:
    """What an engine with none of this owner's objects reads as: only the images (and which are in use)."""
    return EngineState(images=current.images, images_in_use=current.images_in_use)


def containers_by_service(current: EngineState) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for container in current.containers:
        grouped.setdefault(container.service_name, []).append(container)
    return grouped


def the_container(current: EngineState, service_name: str):
    (container,) = containers_by_service(current)[service_name]
    return container


THREE_SERVICES = {
    "db": {"environment": {"ROLE": "db"}, "volumes": ["data:/data"], "networks": ["back"]},
    "api": {"depends_on": ["db"], "networks": ["back", "front"], "ports": ["127.0.0.1::8080"]},
    "web": {"image": IMAGE_2, "depends_on": ["api"], "networks": ["front"], "command": ["sleep", "600"]},
}


@pytest.mark.docker
def test_three_services_with_depends_on_converge(client, engine, owner):
    target = target_of(THREE_SERVICES)
    current, batches = converge(engine, target)
    flat = [entry for batch in batches for entry in batch]
    assert flat.index((Action.START, "db")) < flat.index((Action.CREATE, "api"))
    assert flat.index((Action.START, "api")) < flat.index((Action.CREATE, "web"))
    assert not any(action is Action.PULL for action, _ in flat)  # both images are local
    assert {service: [c.status for c in containers] for service, containers in containers_by_service(current).items()} \
        == {"db": ["running"], "api": ["running"], "web": ["running"]}
    assert current.networks == {Resource("1", "back"), Resource("1", "front")}
    assert current.volumes == {Resource("1", "data")}

    api = client.containers.get(f"{owner}_1_api")
    assert set(api.attrs["NetworkSettings"]["Networks"]) == {f"{owner}_1_back", f"{owner}_1_front"}
    assert "api" in api.attrs["NetworkSettings"]["Networks"][f"{owner}_1_front"]["Aliases"]
    assert api.labels[LABEL_CONFIG_HASH] == config_hash(target.app("1").service("api"))
    assert api.attrs["HostConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert api.attrs["HostConfig"]["RestartPolicy"]["Name"] == "always"
    db = client.containers.get(f"{owner}_1_db")
    assert "ROLE=db" in db.attrs["Config"]["Env"]
    assert [(m["Name"], m["Destination"]) for m in db.attrs["Mounts"]] == [(f"{owner}_1_data", "/data")]
    web = client.containers.get(f"{owner}_1_web")
    assert web.attrs["Config"]["Cmd"] == ["sleep", "600"]
    assert web.exec_run(["cat", "/variant"]).output == b"2\n"

    assert converge(engine, target)[1] == []  # converged stays converged


@pytest.mark.docker
def test_an_environment_change_recreates_only_that_service(engine):
    before, _ = converge(engine, target_of({"db": {"environment": {"V": "1"}}, "web": {}}))
    after, batches = converge(engine, target_of({"db": {"environment": {"V": "2"}}, "web": {}}))
    assert batches == [[(Action.STOP, "db")], [(Action.REMOVE, "db")], [(Action.CREATE, "db")], [(Action.START, "db")]]
    assert the_container(after, "db").id != the_container(before, "db").id
    assert the_container(after, "web").id == the_container(before, "web").id


@pytest.mark.docker
def test_an_image_update_replaces_the_container(client, engine, owner):
    converge(engine, target_of({"web": {}}))
    current, _ = converge(engine, target_of({"web": {"image": IMAGE_2}}))
    assert the_container(current, "web").image == IMAGE_2
    assert client.containers.get(f"{owner}_1_web").exec_run(["cat", "/variant"]).output == b"2\n"


@pytest.mark.docker
def test_a_service_removed_from_the_target_loses_its_container_and_network(client, engine, owner):
    converge(engine, target_of({"db": {"networks": ["back"]}, "web": {}}))
    current, _ = converge(engine, target_of({"web": {}}))
    assert set(containers_by_service(current)) == {"web"}
    assert current.networks == {Resource("1", "default")}
    assert client.containers.list(all=True, filters={"name": f"{owner}_1_db"}) == []


@pytest.mark.docker
def test_an_emptied_target_removes_everything_including_volumes(engine):
    converge(engine, target_of({"db": {"volumes": ["data:/data"]}}))
    assert converge(engine, TargetState())[0] == images_only(engine.read_current())


@pytest.mark.docker
def test_a_container_removed_by_hand_comes_back(client, engine, owner):
    target = target_of({"web": {}})
    converge(engine, target)
    client.containers.get(f"{owner}_1_web").remove(force=True)
    current, batches = converge(engine, target)
    assert batches == [[(Action.CREATE, "web")], [(Action.START, "web")]]
    assert the_container(current, "web").status == "running"


@pytest.mark.docker
def test_a_container_stopped_by_hand_is_started_again(client, engine, owner):
    target = target_of({"web": {}})
    converge(engine, target)
    client.containers.get(f"{owner}_1_web").stop(timeout=3)
    current, batches = converge(engine, target)
    assert batches == [[(Action.START, "web")]]


@pytest.mark.docker
def test_running_false_stops_the_same_container(engine):
    before, _ = converge(engine, target_of({"web": {}}))
    after, batches = converge(engine, target_of({"web": {"running": False}}))
    assert batches == [[(Action.STOP, "web")]]
    stopped = the_container(after, "web")
    assert (stopped.id, stopped.status) == (the_container(before, "web").id, "exited")


@pytest.mark.docker
def test_a_never_started_container_on_two_networks_is_stable(engine):
    """Before its first start the engine reports no NetworkID: attachments must still be read as the app's own."""
    target = target_of({"web": {"running": False, "networks": ["front", "back"]}})
    current, batches = converge(engine, target)
    assert batches[-1] == [(Action.CREATE, "web")]
    web = the_container(current, "web")
    assert (web.status, web.networks) == ("created", {"front", "back"})
    assert plan(target, engine.read_current()) == []


@pytest.mark.docker
def test_a_duplicate_left_by_a_crash_is_reduced_to_one(client, engine, owner):
    target = target_of({"web": {}})
    before, _ = converge(engine, target)
    original = client.containers.get(f"{owner}_1_web")
    client.containers.create(IMAGE_1, name=f"{owner}_1_web_crashed", labels=original.labels,
                             network=f"{owner}_1_default")
    assert len(containers_by_service(engine.read_current())["web"]) == 2
    after, _ = converge(engine, target)
    assert [c.id for c in containers_by_service(after)["web"]] == [the_container(before, "web").id]


@pytest.mark.docker
def test_foreign_containers_are_never_read_nor_touched(client, engine, owner):
    other_owner = DockerEngine(f"{owner}-other", options=replace(DEFAULT_OPTIONS, timeout=20, stop_timeout=3))
    converge(other_owner, target_of({"web": {}}))
    unlabelled = client.containers.create(IMAGE_1, name=f"{owner}-unlabelled")
    try:
        converge(engine, target_of({"web": {}}))
        converge(engine, TargetState())
        assert engine.read_current().containers == ()
        assert client.containers.get(unlabelled.id).status == "created"
        assert the_container(other_owner.read_current(), "web").status == "running"
    finally:
        unlabelled.remove(force=True)
        remove_everything_of(client, f"{owner}-other")


@pytest.mark.docker
def test_steps_are_idempotent(engine):
    target = target_of({"web": {"volumes": ["data:/data"]}})
    service = target.app("1").service("web")
    steps = [CreateNetwork("1", "web", "test", resource="default"),
             CreateVolume("1", "web", "test", resource="data"),
             Pull("1", "web", "test", service=service, image=IMAGE_1),
             Create("1", "web", "test", service=service)]
    for step in steps + steps:
        engine.execute(step)
    container = the_container(engine.read_current(), "web")
    start, stop, remove = (kind("1", "web", "test", container_id=container.id) for kind in (Start, Stop, Remove))
    for step in (start, start, stop, stop, remove, remove, stop):
        engine.execute(step)
    for step in [RemoveNetwork("1", None, "test", resource="default"),
                 RemoveVolume("1", None, "test", resource="data")] * 2:
        engine.execute(step)
    assert engine.read_current() == images_only(engine.read_current())
    with pytest.raises(EngineError, match=r"^start 1/web: container .* no longer exists$"):
        engine.execute(start)


@pytest.mark.docker
def test_pull_without_a_registry_fails_cleanly(engine):
    step = Pull("1", "web", "test", image="fleetlet-test/absent:1")
    with pytest.raises(EngineError) as caught:
        engine.execute(step)
    assert caught.value.step == step
    assert str(caught.value).startswith("pull fleetlet-test/absent:1: ")
    assert not isinstance(caught.value, EngineUnavailable)


@pytest.mark.docker
def test_a_name_taken_by_a_foreign_container_is_an_error(client, engine, owner):
    engine.execute(CreateNetwork("1", "web", "test", resource="default"))
    blocking = client.containers.create(IMAGE_1, name=f"{owner}_1_web")
    try:
        step = Create("1", "web", "test", service=target_of({"web": {}}).app("1").service("web"))
        with pytest.raises(EngineError, match=f"container name {owner}_1_web is taken by another container"):
            engine.execute(step)
        assert client.containers.get(blocking.id).status == "created"
    finally:
        blocking.remove(force=True)


@pytest.mark.docker
def test_network_and_volume_names_taken_by_foreign_objects_are_errors(client, engine, owner):
    network = client.networks.create(f"{owner}_1_net")
    volume = client.volumes.create(f"{owner}_1_data", labels={"somebody": "else"})
    try:
        with pytest.raises(EngineError, match=f"network name {owner}_1_net is taken by a network Fleetlet does not"):
            engine.execute(CreateNetwork("1", "web", "test", resource="net"))
        with pytest.raises(EngineError, match=f"volume name {owner}_1_data is taken by a volume Fleetlet does not own"):
            engine.execute(CreateVolume("1", "web", "test", resource="data"))
        engine.execute(RemoveNetwork("1", None, "test", resource="net"))
        engine.execute(RemoveVolume("1", None, "test", resource="data"))
        assert client.networks.get(network.id) and client.volumes.get(volume.id).attrs["Labels"] == {"somebody": "else"}
    finally:
        network.remove()
        volume.remove()


@pytest.mark.docker
def test_an_engine_survives_pickling_without_its_client(engine):
    converge(engine, target_of({"web": {}}))
    copy = pickle.loads(pickle.dumps(engine))
    assert copy._client is None
    assert copy.read_current() == engine.read_current()
    copy.close()


def test_an_unreachable_daemon_raises_engine_unavailable(tmp_path):
    def factory(timeout):
        return docker.DockerClient(base_url=f"unix://{tmp_path}/absent.sock", timeout=timeout)
    engine = DockerEngine("nobody", client_factory=factory, options=replace(DEFAULT_OPTIONS, timeout=2))
    with pytest.raises(EngineUnavailable, match="Docker engine unavailable"):
        engine.read_current()
    step = Start("1", "web", "test", container_id="abc")
    with pytest.raises(EngineUnavailable) as caught:
        engine.execute(step)
    assert caught.value.step == step


@pytest.mark.parametrize("name", ["", "a_b", "-x", "a" * 64])
def test_owner_names_are_checked(name):
    with pytest.raises(ValueError, match="owner"):
        DockerEngine(name)


@pytest.mark.docker
def test_logs_are_bounded_and_changing_the_bound_recreates_nothing(client, engine, owner):
    target = target_of({"web": {}})
    converge(engine, target)
    (container,) = client.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})
    assert container.attrs["HostConfig"]["LogConfig"] == {"Type": "local", "Config": {"max-file": "3",
                                                                                        "max-size": "10m"}}
    # An agent with other log settings (or a container created before logs were bounded) plans no step.
    other = DockerEngine(owner, options=replace(DEFAULT_OPTIONS, log_max_size="1m", log_max_files=1))
    try:
        assert plan(target, other.read_current()) == []
    finally:
        other.close()
    # A container created before logs were bounded (the engine's default driver) is kept as it is.
    labels, networks = dict(container.labels), list(container.attrs["NetworkSettings"]["Networks"])
    container.remove(force=True)
    legacy = client.containers.create(IMAGE_1, name=f"{owner}_legacy", labels=labels, network=networks[0])
    legacy.start()
    legacy.reload()
    assert legacy.attrs["HostConfig"]["LogConfig"]["Type"] != "local"
    assert plan(target, engine.read_current()) == []
