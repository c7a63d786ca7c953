"""The disk-space preflight of a pull: the bytes still needed (the manifest's layer sizes, minus the layers
the engine already has) against the free space of the engine's data root, less a reserve.

Pure rules (`needed_bytes`; whether they fit is `store.space.refusal`) and a small registry client
(`fetch_plan`: the manifest and the image config over HTTPS, verifying with the CA dockerd trusts for that
registry, ``certs.d/HOST/ca.crt``; htpasswd's Basic and token servers' Bearer challenges).
"""
from __future__ import annotations

import base64
import json
import pathlib
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Iterable, Mapping

from messages.protocol.target_state import RegistryCredentials, registry_host

MIB = 1024 * 1024
MANIFEST_TYPES = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
))
INDEX_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json")
MAX_DOCUMENT = 4 * MIB  # a manifest or an image config
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]{0,2048})"')


class RegistryRefused(Exception):
    """The registry answered with an error: the text is its reason ("unauthorized: authentication required")."""


@dataclass(frozen=True)
class LayerPlan:
    """An image's layers as the registry describes them: compressed sizes with their uncompressed ids."""
    sizes: tuple[int, ...]
    diff_ids: tuple[str, ...]  # as the engine lists an image's RootFS.Layers


def needed_bytes(plan: LayerPlan, present: Iterable[str]) -> int:
    """The bytes a pull still downloads: layers whose diff id the engine holds are skipped ("Already exists")."""
    have = frozenset(present)
    if len(plan.diff_ids) != len(plan.sizes):  # a config that does not match its manifest: count every layer
        return sum(plan.sizes)
    known = zip(plan.sizes, plan.diff_ids, strict=True)
    return sum(size for size, diff_id in known if diff_id not in have)


def api_base(host: str) -> str:
    return "https://registry-1.docker.io" if host == "docker.io" else f"https://{host}"


def split_reference(image: str) -> tuple[str, str, str]:
    """(registry host, repository path, tag or digest) of a normalised image reference."""
    host = registry_host(image)
    rest = image[len(host) + 1:] if image.startswith(host + "/") else image
    if "@" in rest:
        repository, _, reference = rest.partition("@")
    else:
        repository, _, reference = rest.rpartition(":")
    if host == "docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    return host, repository, reference


def fetch_plan(image: str, login: RegistryCredentials | None, certs_dir: str, timeout: float,
               platform: tuple[str, str] = ("linux", "amd64")) -> LayerPlan:
    """The image's layer sizes and diff ids from its registry; RegistryRefused with the registry's reason."""
    host, repository, reference = split_reference(image)
    client = _RegistryClient(host, login, certs_dir, timeout)
    manifest = client.get_json(f"/v2/{repository}/manifests/{reference}", MANIFEST_TYPES)
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        digest = _platform_digest(manifest, platform)
        manifest = client.get_json(f"/v2/{repository}/manifests/{digest}", MANIFEST_TYPES)
    layers = manifest.get("layers") or []
    sizes = tuple(int(layer.get("size", 0)) for layer in layers if isinstance(layer, dict))
    config_digest = (manifest.get("config") or {}).get("digest")
    diff_ids: tuple[str, ...] = ()
    if isinstance(config_digest, str):
        config = client.get_json(f"/v2/{repository}/blobs/{config_digest}", "*/*")
        diff_ids = tuple(str(d) for d in (config.get("rootfs") or {}).get("diff_ids") or ())
    return LayerPlan(sizes, diff_ids)


def _platform_digest(index: Mapping, platform: tuple[str, str]) -> str:
    entries = [entry for entry in index.get("manifests") or [] if isinstance(entry, dict)]
    for entry in entries:
        wanted = entry.get("platform") or {}
        if (wanted.get("os"), wanted.get("architecture")) == platform:
            return str(entry["digest"])
    if not entries:
        raise RegistryRefused("the manifest list is empty")
    raise RegistryRefused(f"no manifest for {platform[0]}/{platform[1]}")


class _RegistryClient:
    def __init__(self, host: str, login: RegistryCredentials | None, certs_dir: str, timeout: float) -> None:
        self.base = api_base(host)
        self.login = login
        self.timeout = timeout
        ca = pathlib.Path(certs_dir) / host / "ca.crt"
        self.context = ssl.create_default_context(cafile=str(ca) if ca.is_file() else None)
        self.authorization: str | None = None
        # Redirects (blob storage) are followed by urllib, but never with our Authorization: see _Redirects.
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self.context), _Redirects())

    def get_json(self, path: str, accept: str) -> dict:
        for attempt in range(2):
            headers = {"Accept": accept, **({"Authorization": self.authorization} if self.authorization else {})}
            try:
                with self.opener.open(urllib.request.Request(self.base + path, headers=headers),
                                      timeout=self.timeout) as answer:
                    body = answer.read(MAX_DOCUMENT + 1)
            except urllib.error.HTTPError as error:
                if error.code == 401 and attempt == 0 and self._authenticate(error.headers.get("WWW-Authenticate", "")):
                    continue
                raise RegistryRefused(_reason(error)) from None
            if len(body) > MAX_DOCUMENT:
                raise RegistryRefused(f"{path}: more than {MAX_DOCUMENT} bytes")
            document = json.loads(body)
            if not isinstance(document, dict):
                raise RegistryRefused(f"{path}: not a JSON object")
            return document
        raise AssertionError("unreachable")

    def _authenticate(self, challenge: str) -> bool:
        scheme, _, params = challenge.partition(" ")
        basic = None if self.login is None else "Basic " + base64.b64encode(
            f"{self.login.username}:{self.login.password}".encode()).decode()
        if scheme.lower() == "basic":
            if basic is None or self.authorization == basic:
                return False
            self.authorization = basic
            return True
        if scheme.lower() == "bearer":
            fields = dict(_CHALLENGE_PARAM.findall(params))
            realm = fields.pop("realm", "")
            if not realm.startswith("https://"):
                return False
            request = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(fields)}",
                                             headers={"Authorization": basic} if basic else {})
            try:
                with self.opener.open(request, timeout=self.timeout) as answer:
                    token = json.loads(answer.read(MAX_DOCUMENT))
            except urllib.error.HTTPError as error:
                raise RegistryRefused(_reason(error)) from None
            value = token.get("token") or token.get("access_token") if isinstance(token, dict) else None
            if not isinstance(value, str):
                return False
            self.authorization = f"Bearer {value}"
            return True
        return False


class _Redirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.remove_header("Authorization")
        return new


def _reason(error: urllib.error.HTTPError) -> str:
    """The registry's own words: its errors document's first code and message (distribution's format)."""
    try:
        errors = json.loads(error.read(64 * 1024)).get("errors") or []
        first = errors[0]
        return f"{str(first.get('code', error.code)).lower()}: {first.get('message', '')}".strip()
    except (ValueError, AttributeError, IndexError, KeyError, TypeError, OSError):
        return f"HTTP {error.code} {error.reason}"
