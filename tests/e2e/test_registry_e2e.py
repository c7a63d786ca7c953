"""Images from a real registry end to end: the agent, the reference cloud, the real engine and the TLS + htpasswd
registry (`tests/support/registry.py`), whose images the engine does not have until the agent pulls them.
"""
from __future__ import annotations

import json
import pathlib
import signal

import pytest

from actors.cli.plan import current_plan
from actors.target.images import ledger_from_json
from messages.bus.target import IMAGE_LEDGER_KEY
from store import Store
from tests.e2e.test_target_sync_e2e import SyncedDevice, reported_services
from tests.integration.test_reconciler_engine import IMAGE_1
from tests.support.cloud import CloudProcess
from tests.support.polling import wait_for

APP_1, APP_2, APP_3, BIG = "fleetlet-test/app:1", "fleetlet-test/app:2", "fleetlet-test/app:3", "fleetlet-test/big:1"


@pytest.fixture
def device(tmp_path, port, broker, docker_client, test_images):
    cloud = CloudProcess(tmp_path, broker.port, f"sqlite:///{tmp_path}/cloud.db", {"log": {"level": "INFO"}}).start()
    synced = SyncedDevice(docker_client, tmp_path, port, cloud)
    reconciler = synced.config["actors"]["reconciler"]
    # A copy: the shipped test settings are one dict shared by every test of the session.
    reconciler["settings"] = {**reconciler["settings"], "retry_base": 0.5, "retry_max": 2.0}
    yield synced
    for system in synced.systems:
        system.stop()
    cloud.stop()
    synced.remove_everything()


def post(device: SyncedDevice, services: dict[str, str], registries: dict | None = None, app: str = "1") -> str:
    """A target of one app whose services ({name: image}) each run an image."""
    document = {"apps": {app: {"appName": f"app-{app}", "services": [
        {"serviceName": name, "config": {"image": image}} for name, image in services.items()]}}}
    if registries:
        document["registries"] = registries
    reply = device.admin.set_target(device.owner, document)
    assert reply.ok, reply.body
    return reply.json()["etag"]


def present(client, image: str) -> bool:
    # The raw list: the SDK's inspects each image, and one removed meanwhile (by any test) raises.
    return any(image in (found.get("RepoTags") or ()) for found in client.api.images())


def running_image(device: SyncedDevice, service: str) -> str:
    containers = device.containers()[service]
    assert len(containers) == 1 and containers[0].status == "running"
    return containers[0].attrs["Config"]["Image"]


def pulled(device: SyncedDevice) -> frozenset[str]:
    with Store.open(device.db, readonly=True) as store:
        return ledger_from_json(store.get(IMAGE_LEDGER_KEY, {})).pulled


def agent_files_hold(tmp_path: pathlib.Path, secret: str) -> list[str]:
    """Files of the test (logs, recordings) holding `secret`, besides the databases that store the target."""
    return [str(path) for path in tmp_path.rglob("*") if path.is_file() and ".db" not in path.name
            and secret.encode() in path.read_bytes()]


def test_registry_images_converge_and_cleanup_keeps_the_previous_release(device, registry, docker_client,
                                                                          tmp_path):
    login = registry.login()
    assert not any(present(docker_client, registry.image(name)) for name in (APP_1, APP_2, APP_3))
    # app:1 is pulled by hand, not by Fleetlet: whatever happens, cleanup never touches it
    docker_client.api.pull(registry.image("fleetlet-test/app"), "1", auth_config=registry.server.auth_config())
    device.start()
    device.wait_converged(post(device, {"web": registry.image(APP_1)}, login), timeout=30)
    device.wait_converged(post(device, {"web": registry.image(APP_2)}, login), timeout=30)
    assert running_image(device, "web") == registry.image(APP_2)
    etag = post(device, {"web": registry.image(APP_3)}, login)
    device.wait_converged(etag, timeout=30)
    assert running_image(device, "web") == registry.image(APP_3)
    assert present(docker_client, registry.image(APP_2))  # the previous release, kept for a rollback
    assert present(docker_client, registry.image(APP_1))  # not Fleetlet's
    wait_for(lambda: pulled(device) == {registry.image(APP_2), registry.image(APP_3)}, what="the pulls in the ledger")

    device.wait_converged(post(device, {"web": registry.image(APP_1)}, login), timeout=30)
    wait_for(lambda: not present(docker_client, registry.image(APP_2)), timeout=20,
             what="the image of the release before the previous one to be removed")
    assert present(docker_client, registry.image(APP_3))  # now the previous release
    wait_for(lambda: pulled(device) == {registry.image(APP_3)}, what="the ledger to forget the removed image")
    log_config = device.containers()["web"][0].attrs["HostConfig"]["LogConfig"]
    assert log_config == {"Type": "local", "Config": {"max-file": "3", "max-size": "10m"}}
    assert not agent_files_hold(tmp_path, registry.server.password)


def test_wrong_credentials_fail_that_service_only_with_the_reason(device, registry, tmp_path):
    device.start()
    wrong = "not-the-password"
    post(device, {"local": IMAGE_1, "private": registry.image(APP_2)}, registry.login(wrong))

    def failed_reason():
        row = reported_services(device).get("1/private", {})
        return row.get("reason")
    reason = wait_for(failed_reason, timeout=30, what="the private service reported failed")
    assert "unauthorized" in reason
    assert reported_services(device)["1/local"]["status"] == "running"
    assert any("unauthorized" in error["message"] and error["key"] == "1/private" for error in device.errors())
    assert wrong not in str(device.reported())
    assert wrong not in json.dumps(current_plan(device.config))  # run.py plan
    assert wrong not in str(device.errors())  # what run.py status shows
    assert not agent_files_hold(tmp_path, wrong)


def test_a_pull_that_cannot_fit_is_refused_with_the_figures_and_the_release_stays(device, registry):
    device.config["actors"]["reconciler"]["settings"]["disk_reserve_mb"] = 100_000_000  # 100 TB kept free
    device.start()
    device.wait_converged(post(device, {"web": IMAGE_1}), timeout=30)
    running = device.running_ids()["web"]
    post(device, {"web": registry.image(BIG)}, registry.login())
    reason = wait_for(lambda: reported_services(device).get("1/web", {}).get("reason"), timeout=30,
                      what="the refused pull reported")
    assert "needs 65 MB" in reason and "MB free" in reason, reason
    assert device.running_ids() == {"web": running}  # the release in force runs on
    assert not present(device.docker, registry.image(BIG))


def _progress_seen(device: SyncedDevice) -> dict | None:
    for message in reversed(device.messages("CurrentStateObserved")):
        row = message["state"].get("apps", {}).get("1", {}).get("services", {}).get("web", {})
        if row.get("progress", {}).get("percent", 0) >= 5:
            return row["progress"]
    return None


# own_registry before device: the device (its containers) goes first at teardown, then the registry's images can go.
def test_the_registry_killed_mid_pull_then_restarted_ends_in_a_running_service(own_registry, device, docker_client):
    device.config["actors"]["reconciler"]["settings"].update(pull_stall_timeout=5.0)
    system = device.start()
    image = own_registry.image(BIG)
    etag = post(device, {"web": image}, own_registry.login())
    progress = wait_for(lambda: _progress_seen(device), timeout=30, what="the pull's progress reported")
    assert 0 < progress["bytes"] < progress["total"] and progress["total"] >= 64 * 1024 * 1024
    own_registry.server.stop(signal.SIGKILL)
    wait_for(lambda: own_registry.proxy.open == 0, what="the cut to reach the engine")
    assert not present(docker_client, image)
    own_registry.server.start()
    device.wait_converged(etag, timeout=120)
    assert running_image(device, "web") == image

    # Restarted with the registry unreachable: it converges from the image it has, and pulls nothing.
    own_registry.server.stop(signal.SIGKILL)
    system.stop()
    device.containers()["web"][0].remove(force=True)
    device.start()
    wait_for(lambda: "web" in device.containers() and device.containers()["web"][0].status == "running",
             timeout=30, what="the service back from the local image")


def test_a_stalled_pull_is_aborted_and_retried(own_registry, device):
    device.config["actors"]["reconciler"]["settings"].update(pull_stall_timeout=2.0, max_attempts=1)
    device.start()
    etag = post(device, {"web": own_registry.image(BIG)}, own_registry.login())
    wait_for(lambda: _progress_seen(device), timeout=30, what="the pull's progress reported")
    own_registry.proxy.pause()
    wait_for(lambda: any("pull stalled: no progress for 2 s" in error["message"] for error in device.errors()),
             timeout=20, what="the stalled pull aborted")
    own_registry.proxy.resume()
    device.wait_converged(etag, timeout=120)
