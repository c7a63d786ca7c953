"""The one HTTP client (messages.transport.http) against a stub cloud on loopback: token, JSON, statuses, errors."""
from __future__ import annotations

import json
import pathlib
import socket
import ssl
import threading
import time
from urllib.parse import unquote

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud import pki as cloud_pki
from messages.protocol.api import segment
from messages.transport.http import CloudClient, CloudError, Response
from messages.transport.tls import TlsSettings
from tests.support.pki import session_pki
from tests.support.stub_cloud import StubCloud


def test_sends_the_bearer_token_and_a_json_body_and_reads_the_answer():
    with StubCloud(lambda request: (200, {"ETag": '"x"'}, b'{"ok": true}')) as cloud:
        response = CloudClient(cloud.url, "secret", 5.0).request("PATCH", "/a", {"k": [1, 2]})
        seen = cloud.seen()[0]
    assert (seen.method, seen.path, seen.json()) == ("PATCH", "/a", {"k": [1, 2]})
    assert seen.headers["authorization"] == "Bearer secret" and seen.headers["content-type"] == "application/json"
    assert response == Response(200, response.headers, b'{"ok": true}') and response.headers["etag"] == '"x"'
    assert response.ok and response.json() == {"ok": True}


def test_without_a_token_no_authorization_and_any_status_is_an_answer_unless_ok_is_given():
    with StubCloud(lambda request: (404, {}, b"{}")) as cloud:
        client = CloudClient(cloud.url)
        assert client.request("GET", "/x").status == 404 and "authorization" not in cloud.seen()[0].headers
        with pytest.raises(CloudError) as raised:
            client.request("GET", "/x", ok=(200,))
    assert raised.value.status == 404


def server_tls() -> ssl.SSLContext:
    """The session PKI's server certificate (127.0.0.1), as the reference cloud serves it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*session_pki().files("server"))
    return context


def client(url: str, token: str | None = None, **options) -> CloudClient:
    """A client trusting the session PKI's CA (an https url needs it; an http one ignores it)."""
    return CloudClient(url, token, tls=TlsSettings(session_pki().ca), **options)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_redirect_to_another_origin_is_an_answer_not_followed_so_the_token_never_reaches_it(tls):
    with StubCloud() as elsewhere, \
            StubCloud(lambda request: (302, {"Location": elsewhere.url + "/steal"}, b""),
                      tls=server_tls() if tls else None) as cloud:
        assert client(cloud.url, "secret").request("GET", "/x").status == 302
        assert len(cloud.seen()) == 1 and elsewhere.seen() == []


def test_https_verifies_the_server_against_the_ca_and_names_the_refused_certificate(tmp_path):
    other_ca = tmp_path / "other"
    cloud_pki.init(other_ca)
    with StubCloud(lambda request: (200, {}, b"{}"), tls=server_tls()) as cloud:
        assert client(cloud.url, "t").health().status == 200
        port = cloud.url.rsplit(":", 1)[1]
        with pytest.raises(CloudError) as refused:
            CloudClient(cloud.url, "t", tls=TlsSettings(str(other_ca / "ca.crt"))).health()
        with pytest.raises(CloudError, match="certificate verify failed"):
            CloudClient(cloud.url, "t").health()  # the system's store knows no development CA
        assert cloud.seen() == [cloud.seen()[0]]  # the refused requests sent nothing, the token least of all
    issuer = x509.load_pem_x509_certificate(pathlib.Path(session_pki().ca).read_bytes()).subject.rfc4514_string()
    assert (f"certificate verify failed: unable to get local issuer certificate for cloud API 127.0.0.1:{port} "
            f"(subject CN=localhost,OU=server, issuer {issuer})") in str(refused.value)


def test_a_path_prefix_in_the_url_is_kept_and_segments_are_escaped():
    with StubCloud(lambda request: (304, {}, b"")) as cloud:
        response = CloudClient(cloud.url + "/fleet/", "t").get_target("a/b?c", etag='"e"', ok=(200, 304))
        seen = cloud.seen()[0]
    assert response.status == 304
    assert seen.path == "/fleet/api/v1/device/a%2Fb%3Fc/target-state" and seen.headers["if-none-match"] == '"e"'


def test_no_answer_and_oversized_answers_raise_cloud_error():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(CloudError) as raised:
        CloudClient(f"http://127.0.0.1:{port}", timeout=2.0).health()
    assert raised.value.status is None
    with StubCloud(lambda request: (200, {}, b"x" * 101)) as cloud:
        with pytest.raises(CloudError, match="larger than 100 bytes"):
            CloudClient(cloud.url, max_response_bytes=100).health()


@pytest.mark.parametrize("url", ["ftp://host", "http://", "127.0.0.1:80", "http://host:port"])
def test_a_url_that_cannot_work_is_refused_at_once(url):
    with pytest.raises(CloudError):
        CloudClient(url)


@pytest.mark.parametrize("body", [b"", b"not json", b'{"a": 1', b"[" * 100_000])
def test_a_body_that_is_not_json_raises_cloud_error_with_the_status(body):
    with pytest.raises(CloudError) as raised:
        Response(200, {}, body).json()
    assert raised.value.status == 200


@pytest.mark.parametrize("body", [b'{"a": 1, "a": 2}', b'{"v": 18446744073709551616}', b'{"v": 1e999}',
                                  b'{"v": NaN}', b'{"v": "\\ud800"}'])
def test_a_body_the_strict_decoder_refuses_raises_cloud_error(body):
    """What the cloud answers is hostile input like any other: json.loads would let each of these through."""
    with pytest.raises(CloudError, match="not JSON"):
        Response(200, {}, body).json()


@given(st.text())
def test_a_segment_never_changes_the_path_and_decodes_back(value):
    escaped = segment(value)
    assert not set(escaped) & set("/?#&= ")
    assert unquote(escaped) == value


def test_json_round_trips_through_the_client():
    with StubCloud(lambda request: (200, {}, request.body)) as cloud:
        client = CloudClient(cloud.url)

        @settings(max_examples=50, deadline=None)  # one stub for every example: starting one costs 0.5 s
        @given(st.dictionaries(st.text(), st.integers(-2**63, 2**63 - 1) | st.text() | st.booleans() | st.none()))
        def echoed(document):
            assert json.loads(client.request("POST", "/echo", document).body) == document

        echoed()


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("head", [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", b""])
def test_a_server_trickling_bytes_cannot_hold_a_request_past_its_timeout(head, tls):
    """A byte every 0.1 s keeps each socket read under the timeout; the whole request must still end."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    context = server_tls() if tls else None

    def trickle():
        connection, _ = listener.accept()
        if context is not None:
            connection = context.wrap_socket(connection, server_side=True)
        with connection:
            connection.recv(65536)
            for byte in head or b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
                if stop.wait(0.1):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    started = time.monotonic()
    try:
        with pytest.raises(CloudError, match="no complete answer within 1.0 s"):
            client(f"{'https' if tls else 'http'}://127.0.0.1:{listener.getsockname()[1]}", timeout=1.0).health()
        assert time.monotonic() - started < 1.5
    finally:
        stop.set()
        server.join(5)
        listener.close()
