"""The development PKI and the broker configuration it implies (cloud.pki, run.py pki)."""
from __future__ import annotations

import os
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

import run
from cloud import pki


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_makes_a_ca_a_server_certificate_and_the_cloud_identity_with_private_keys_0600(tmp_path):
    base = pki.init(tmp_path / "pki")
    for stem in ("ca", "server", "cloud"):
        assert mode(base / f"{stem}.key") == 0o600
        assert mode(base / f"{stem}.crt") == 0o644
    server = x509.load_pem_x509_certificate((base / "server.crt").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert pki.identities(base) == [pki.Identity(pki.CLOUD_IDENTITY, pki.CLOUD_ROLE, None)]
    # what ssl itself accepts: the server certificate chains to the CA, for 127.0.0.1
    context = ssl.create_default_context(cafile=str(base / "ca.crt"))
    context.load_cert_chain(base / "cloud.crt", base / "cloud.key")


def test_init_refuses_to_replace_a_ca_unless_forced(tmp_path):
    pki.init(tmp_path)
    before = (tmp_path / "ca.crt").read_bytes()
    with pytest.raises(pki.PkiError, match="ca.key exists"):
        pki.init(tmp_path)
    assert (tmp_path / "ca.crt").read_bytes() == before
    pki.init(tmp_path, force=True)
    assert (tmp_path / "ca.crt").read_bytes() != before


def test_a_device_certificate_names_the_thing_as_cn_and_carries_the_uuid(tmp_path):
    pki.init(tmp_path)
    cert_path = pki.issue_device(tmp_path, "u-17", "pump-17")
    assert cert_path == tmp_path / "u-17.crt" and mode(tmp_path / "u-17.key") == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pump-17"
    assert pki.read_identity(cert_path.read_bytes()) == pki.Identity("pump-17", pki.DEVICE_ROLE, "u-17")
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)


def test_issuing_needs_a_ca_and_valid_names(tmp_path):
    with pytest.raises(pki.PkiError, match="run `run.py pki init"):
        pki.issue_device(tmp_path, "u-1")
    pki.init(tmp_path)
    for uuid, thing in (("bad/uuid", None), ("u-1", "no spaces"), ("ca", None), ("server", None), ("", None)):
        with pytest.raises(pki.PkiArgumentError):
            pki.issue_device(tmp_path, uuid, thing)


def test_the_acl_gives_devices_their_own_topics_and_the_cloud_every_things():
    text = pki.acl_text([pki.Identity("fleetlet-cloud", pki.CLOUD_ROLE, None),
                         pki.Identity("pump-17", pki.DEVICE_ROLE, "u-17"),
                         pki.Identity("lamp", pki.DEVICE_ROLE, "lamp")])
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == [
        "pattern readwrite $aws/things/%u/shadow/#", "pattern readwrite $emqx/things/%u/shadow/#",
        "pattern read fleetlet/devices/%u/#",
        "user fleetlet-cloud", "topic readwrite $aws/things/+/shadow/#", "topic readwrite $emqx/things/+/shadow/#",
        "topic readwrite fleetlet/devices/+/#",
        "user pump-17", "topic read fleetlet/devices/u-17/#"]  # lamp's uuid is its name: the pattern covers it


def test_the_broker_configuration_requires_certificates_and_ties_sessions_to_them(tmp_path):
    pki.init(tmp_path)
    pki.issue_device(tmp_path, "u-1", "pump-1")
    path = pki.broker_config(tmp_path, 8883)
    text = path.read_text()
    for line in ("listener 8883 127.0.0.1", "require_certificate true", "use_identity_as_username true",
                 "use_username_as_clientid true", "allow_anonymous false", f"acl_file {tmp_path / 'acl'}",
                 f"cafile {tmp_path / 'ca.crt'}"):
        assert line in text.splitlines()
    assert "user pump-1" in (tmp_path / "acl").read_text()
    assert "allow_anonymous true" not in text  # no plaintext listener unless asked


def test_a_plaintext_listener_is_only_for_loopback(tmp_path):
    pki.init(tmp_path)
    text = pki.broker_config(tmp_path, 8883, plain_port=1883).read_text()
    assert text.splitlines()[-2:] == ["listener 1883 127.0.0.1", "allow_anonymous true"]
    with pytest.raises(pki.PkiArgumentError, match="only for loopback"):
        pki.broker_config(tmp_path, 8883, host="0.0.0.0", plain_port=1883)
    with pytest.raises(pki.PkiArgumentError, match="only for loopback"):
        pki.plaintext_conf_text(1883, "192.0.2.1")


@given(st.text(max_size=20))
def test_a_name_is_taken_exactly_when_it_is_safe_in_a_file_name_and_an_acl_line(name):
    safe = 0 < len(name) <= 128 and all(c.isascii() and (c.isalnum() or c in ":_-") for c in name)
    try:
        pki.check_name(name, "x")
    except pki.PkiArgumentError:
        assert not safe
    else:
        assert safe


@pytest.mark.parametrize(("args", "code", "says"), [
    (["pki", "device", "u/1", "--dir", "{dir}"], 2, "device uuid must match"),
    (["pki", "broker-config", "{dir}", "--port", "0"], 2, "--port must be in 1..65535"),
    (["pki", "broker-config", "{dir}", "--plain-port", "70000"], 2, "--plain-port must be in 1..65535"),
    (["pki", "init", "{dir}"], 1, "ca.key exists"),
    (["pki", "device", "u-1", "--dir", "{dir}/elsewhere"], 1, "no CA in"),
])
def test_the_command_line_refuses_what_it_cannot_do(tmp_path, capsys, args, code, says):
    pki.init(tmp_path)
    assert run.main([arg.format(dir=tmp_path) for arg in args]) == code
    assert says in capsys.readouterr().err


def test_the_command_line_issues_a_device_and_writes_the_broker_configuration(tmp_path, capsys):
    assert run.main(["pki", "init", str(tmp_path / "p")]) == 0
    assert run.main(["pki", "device", "u-9", "--dir", str(tmp_path / "p"), "--thing", "pump-9"]) == 0
    assert run.main(["pki", "broker-config", str(tmp_path / "p"), "--port", "18883"]) == 0
    assert "user pump-9" in (tmp_path / "p" / "acl").read_text()
    assert "listener 18883 127.0.0.1" in (tmp_path / "p" / "mosquitto.conf").read_text()
