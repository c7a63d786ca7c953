"""The local API over its Unix socket, against a real agent and the real engine: every endpoint with the
operator's key, an app's key inside and outside its app, no key, and the metrics changing as the agent works."""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.api import client
from actors.api.keys import KEY_VARIABLE, operator_key, service_key
from actors.api.metrics import FAMILIES
from actors.runtime.system import AgentSystem
from tests.integration.test_reconciler_engine import Device, document, recorder
from tests.integration.test_supervision import agent_config
from tests.support.polling import wait_for
from tests.support.stub_cloud import StubCloud

LOGGED = {"command": ["/bin/sh", "-c", "echo hello-from-web; trap 'exit 0' TERM; sleep 86400 & wait"]}
TARGET = document({"1": {"web": {**LOGGED, "labels": {"fleetlet.api": "true"}}, "db": {}},
                   "2": {"other": {}}})


@pytest.fixture
def api_agent(tmp_path, port, docker_client, test_images):
    device = Device(docker_client, tmp_path)
    short = tempfile.mkdtemp(prefix="fl-api-", dir="/tmp")  # a Unix socket path is at most 107 bytes
    served = {"etag": '"v1"', "body": json.dumps(TARGET).encode()}  # a test may serve a new target

    def answer(request):
        if request.headers.get("if-none-match") == served["etag"]:
            return 304, {}, b""
        return 200, {"ETag": served["etag"], "Content-Type": "application/json"}, served["body"]
    with StubCloud(answer) as cloud:
        cloud.served = served
        config = agent_config(tmp_path, port, {})
        defaults = __import__("conf").load("agent")["actors"]
        config["actors"] = {name: defaults[name] for name in ("persistence", "reconciler", "poller", "api")}
        config["actors"]["poller"] = {**defaults["poller"], "settings": {"interval": 60.0, "min_gap": 0.1}}
        config["actors"]["reconciler"] = {**defaults["reconciler"], "settings": {"drift_interval": 30.0}}
        config["actors"]["recorder"] = recorder(device)
        config["device"]["uuid"] = device.owner
        config["cloud"]["url"] = cloud.url
        config["api"].update(socket=f"{short}/api.sock", key_file=f"{short}/api.key")
        system = AgentSystem(config)
        system.start()
        try:
            wait_for(lambda: os.path.exists(config["api"]["socket"]), what="the API listening")
            yield config, device, cloud
        finally:
            system.stop()
            device.remove_everything()
            shutil.rmtree(short, ignore_errors=True)


def running(device: Device, *names: str) -> dict | None:
    """service name -> running container id, once exactly ``names`` (or, without names, some) each run once."""
    found = device.containers()
    if any(len(c) != 1 or c[0].status != "running" for c in found.values()):
        return None
    ids = {service: containers[0].id for service, containers in found.items()}
    return ids if ids and (not names or set(ids) == set(names)) else None


def call(config, method, path, body=b"", key=None):
    status, answer = client.request(config, method, path, body, key=key)
    return status, answer


def as_json(answer: bytes):
    return json.loads(answer)


def metrics_of(config) -> dict:
    status, answer = call(config, "GET", "/metrics")
    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(answer.decode())}
    assert set(FAMILIES) <= set(families), set(FAMILIES) - set(families)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}


def total(samples: dict, name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def test_every_endpoint_with_the_operator_key(api_agent):
    config, device, cloud = api_agent
    wait_for(lambda: running(device, "web", "db", "other"), timeout=30, what="the target running")
    device.wait_converged('"v1"')

    status, answer = call(config, "GET", "/v1/status")
    assert status == 200
    assert {a["name"]: a["state"] for a in as_json(answer)["actors"]} == {
        "persistence": "running", "reconciler": "running", "poller": "running", "api": "running", "recorder": "running"}
    status, answer = call(config, "GET", "/v1/plan")
    assert status == 200 and as_json(answer)["etag"] == '"v1"' and as_json(answer)["converged"]

    before = metrics_of(config)
    polls = len(cloud.seen())
    status, _ = call(config, "POST", "/v1/poll-now")
    assert status == 202
    wait_for(lambda: len(cloud.seen()) > polls, what="the poll asked for")

    # The key reaches the service that asked for it, and the planner stays converged with it.
    web = device.docker.containers.get(device.running_ids()["web"])
    key = service_key(operator_key(config["api"]["key_file"]), "1")
    assert f"{KEY_VARIABLE}={key}" in web.attrs["Config"]["Env"]
    db = device.docker.containers.get(device.running_ids()["db"])
    assert not any(env.startswith(KEY_VARIABLE) for env in db.attrs["Config"]["Env"])

    status, answer = call(config, "GET", "/v1/apps/1/services/web/logs?tail=10")
    assert status == 200 and b"hello-from-web" in answer

    started = web.attrs["State"]["StartedAt"]
    status, _ = call(config, "POST", "/v1/apps/1/services/web/restart")
    assert status == 202
    wait_for(lambda: device.docker.containers.get(web.id).attrs["State"]["StartedAt"] != started
             and device.docker.containers.get(web.id).status == "running", timeout=20, what="web restarted")

    status, _ = call(config, "POST", "/v1/apps/1/services/web/stop")
    assert status == 202
    wait_for(lambda: device.docker.containers.get(web.id).status == "exited", timeout=20, what="web stopped")
    # The reconciler holds it stopped: a drift check or a poll does not start it again.
    call(config, "POST", "/v1/poll-now")
    status, answer = call(config, "GET", "/v1/plan")
    assert status == 200 and as_json(answer)["steps"] == [] and as_json(answer)["converged"]
    assert device.docker.containers.get(web.id).status == "exited"
    status, _ = call(config, "POST", "/v1/apps/1/services/web/start")
    assert status == 202
    wait_for(lambda: device.docker.containers.get(web.id).status == "running", timeout=20, what="web started")

    # A hold lasts until the next target state.
    status, _ = call(config, "POST", "/v1/apps/1/services/web/stop")
    wait_for(lambda: device.docker.containers.get(web.id).status == "exited", timeout=20, what="web stopped again")
    cloud.served.update(etag='"v2"', body=json.dumps(document({"1": {"web": {**LOGGED, "labels": {
        "fleetlet.api": "true"}}, "db": {}}, "2": {"other": {"environment": {"V": "2"}}}})).encode())
    call(config, "POST", "/v1/poll-now")
    wait_for(lambda: device.docker.containers.get(web.id).status == "running", timeout=20,
             what="web running under the new target")

    status, answer = call(config, "POST", "/v1/apps/1/services/nope/restart")
    assert status == 404 and "has no service 'nope'" in as_json(answer)["error"]

    after = wait_for(lambda: (m := metrics_of(config)) and total(m, "fleetlet_steps_total") >
                     total(before, "fleetlet_steps_total") and m, what="the steps counted")
    assert total(after, "fleetlet_polls_total") > total(before, "fleetlet_polls_total")
    passes = "fleetlet_reconcile_pass_seconds_count"
    assert total(after, passes) > total(before, passes)
    assert after[("fleetlet_link_bytes_total", (("direction", "received"), ("link", "http")))] > \
        before.get(("fleetlet_link_bytes_total", (("direction", "received"), ("link", "http"))), 0)
    assert after[("fleetlet_memory_pss_bytes", ())] > 10_000_000
    assert total(after, "fleetlet_api_requests_total") > total(before, "fleetlet_api_requests_total")


def test_a_followed_log_streams_until_the_client_leaves(api_agent):
    config, device, _ = api_agent
    wait_for(lambda: running(device, "web", "db", "other"), timeout=30, what="the target running")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(config["api"]["socket"])
    key = operator_key(config["api"]["key_file"])
    sock.sendall(f"GET /v1/apps/1/services/web/logs?tail=5&follow=1 HTTP/1.1\r\nAuthorization: Bearer {key}\r\n"
                 f"\r\n".encode())
    data = b""
    while b"hello-from-web" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    sock.close()
    status, _ = call(config, "GET", "/v1/status")  # the actor serves on
    assert status == 200


def test_an_app_key_is_refused_outside_its_app_and_no_key_at_all(api_agent):
    config, device, _ = api_agent
    wait_for(lambda: running(device, "web", "db", "other"), timeout=30, what="the target running")
    app_key = service_key(operator_key(config["api"]["key_file"]), "1")
    status, answer = call(config, "GET", "/v1/apps/1/services/web/logs?tail=1", key=app_key)
    assert status == 200
    for method, path in (("POST", "/v1/apps/2/services/other/restart"), ("GET", "/v1/apps/2/services/other/logs"),
                         ("GET", "/v1/status"), ("GET", "/metrics")):
        status, answer = call(config, method, path, key=app_key)
        assert status == 403 and as_json(answer) == {"error": "this key may call only what concerns app 1"}
    status, answer = call(config, "GET", "/v1/apps/1/services/web/logs", key="")
    assert status == 401 and "an API key is required" in as_json(answer)["error"]
    status, _ = call(config, "GET", "/v1/status", key=service_key(operator_key(config["api"]["key_file"]), "2"))
    assert status == 401  # app 2 never asked for a key


def raw_exchange(config, data: bytes, close_write: bool = False) -> bytes:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(config["api"]["socket"])
    sock.sendall(data)
    if close_write:
        sock.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    return answer


def test_garbage_on_the_socket_is_answered_and_the_api_serves_on(api_agent):
    config, _, _ = api_agent
    assert raw_exchange(config, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert raw_exchange(config, b"GET /" + b"a" * 20000).startswith(b"HTTP/1.1 431 ")
    big = b"PATCH /v1/shadow HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n"
    assert raw_exchange(config, big).startswith(b"HTTP/1.1 413 ")  # refused before a byte of it is read
    assert raw_exchange(config, b"GET /v1/status HTTP/1.1\r\n", close_write=True) == b""  # left mid-request
    status, answer = call(config, "PATCH", "/v1/shadow", b'{"reported": {"a": 1e999}}')
    assert status == 400 and as_json(answer)["error"].startswith("Invalid JSON")
    status, answer = call(config, "GET", "/v1/status")
    assert status == 200 and {a["name"]: a["restarts"] for a in as_json(answer)["actors"]}["api"] == 0

    # Slow clients up to the limit hold their places; one more is refused at once, and the API serves on.
    from actors.api.server import MAX_CONNECTIONS
    slow = []
    for _ in range(MAX_CONNECTIONS):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(config["api"]["socket"])
        sock.sendall(b"GET /v1/status HTTP/1.1\r\n")
        slow.append(sock)
    try:
        wait_for(lambda: call(config, "GET", "/v1/status")[0] == 503, what="the request past the limit refused")
    finally:
        for sock in slow:
            sock.close()
    wait_for(lambda: call(config, "GET", "/v1/status")[0] == 200, what="the API serving again")


def test_the_loopback_port_serves_the_same_api(tmp_path, port, start_agent):
    import http.client

    from cloud.loopback import free_port
    config = agent_config(tmp_path, port, {"persistence": {"class": "actors.persistence.Persistence"},
                                           "api": {"class": "actors.api.actor.Api"}})
    config["api"]["port"] = free_port()
    start_agent(config, wait_running=True)
    key = operator_key(config["api"]["key_file"])

    def ask(headers):
        connection = http.client.HTTPConnection("127.0.0.1", config["api"]["port"], timeout=10)
        try:
            connection.request("GET", "/v1/status", headers=headers)
            reply = connection.getresponse()
            return reply.status, reply.read()
        finally:
            connection.close()
    status, answer = wait_for(lambda: ask({"Authorization": f"Bearer {key}"}), what="the API on its port")
    assert status == 200 and {a["name"] for a in as_json(answer)["actors"]} == {"persistence", "api"}
    assert ask({})[0] == 401
