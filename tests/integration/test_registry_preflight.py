"""The preflight's registry client against a small HTTPS registry of the test's own: a token server (Bearer, as
Docker Hub and most hosted registries), a manifest list, the registry's own error documents."""
from __future__ import annotations

import base64
import json
import shutil
import ssl
import threading
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from actors.target.engine.preflight import LayerPlan, RegistryRefused, fetch_plan
from messages.protocol.target_state import RegistryCredentials

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCUMENTS = {
    "/v2/team/app/manifests/1": (INDEX, {"mediaType": INDEX, "manifests": [
        {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}}]}),
    "/v2/team/app/manifests/sha256:amd": (MANIFEST, {"mediaType": MANIFEST, "config": {"digest": "sha256:cfg"},
                                                     "layers": [{"size": 100}, {"size": 2000}]}),
    "/v2/team/app/blobs/sha256:cfg": ("application/json", {"rootfs": {"diff_ids": ["sha256:a", "sha256:b"]}}),
}
BASIC = "Basic " + base64.b64encode(b"user:right").decode()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code: int, document: dict, content_type: str = "application/json", **headers: str):
        body = json.dumps(document).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        port = self.server.server_address[1]
        if self.path.startswith("/token?"):
            assert "scope=repository%3Ateam%2Fapp%3Apull" in self.path
            if "Authorization" not in self.headers:
                return self.answer(200, {"token": "anonymous"})  # as hosted registries do: it reads public images
            if self.headers.get("Authorization") != BASIC:
                return self.answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad login"}]})
            return self.answer(200, {"token": "T"})
        if self.headers.get("Authorization") != "Bearer T":
            return self.answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                               WWW_Authenticate=f'Bearer realm="https://127.0.0.1:{port}/token",service="test",'
                                                'scope="repository:team/app:pull"')
        if self.path not in DOCUMENTS:
            return self.answer(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
        content_type, document = DOCUMENTS[self.path]
        return self.answer(200, document, content_type)


@pytest.fixture
def registry(pki, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*pki.files("server"))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    (tmp_path / host).mkdir()
    shutil.copyfile(pki.ca, tmp_path / host / "ca.crt")
    yield host, str(tmp_path)
    server.shutdown()


def test_a_token_login_and_a_manifest_list_give_the_platforms_layers(registry):
    host, certs = registry
    plan = fetch_plan(f"{host}/team/app:1", RegistryCredentials("user", "right"), certs, 5.0, ("linux", "amd64"))
    assert plan == LayerPlan((100, 2000), ("sha256:a", "sha256:b"))


def test_a_refused_login_and_an_unknown_tag_give_the_registrys_reason(registry):
    host, certs = registry
    with pytest.raises(RegistryRefused, match="^unauthorized: bad login$"):
        fetch_plan(f"{host}/team/app:1", RegistryCredentials("user", "wrong"), certs, 5.0)
    with pytest.raises(RegistryRefused, match="^unauthorized: authentication required$"):
        fetch_plan(f"{host}/team/app:1", None, certs, 5.0)
    with pytest.raises(RegistryRefused, match="^manifest_unknown: manifest unknown$"):
        fetch_plan(f"{host}/team/app:9", RegistryCredentials("user", "right"), certs, 5.0)
    with pytest.raises(RegistryRefused, match="no manifest for linux/s390x"):
        fetch_plan(f"{host}/team/app:1", RegistryCredentials("user", "right"), certs, 5.0, ("linux", "s390x"))


def test_the_registry_is_verified_with_the_ca_dockerd_trusts(registry, tmp_path):
    host, _ = registry
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # no certs.d entry: the system
        # store, which does not know the test CA
        fetch_plan(f"{host}/team/app:1", RegistryCredentials("user", "right"), str(tmp_path / "empty"), 5.0)
