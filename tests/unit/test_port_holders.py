"""Naming the container that holds a port, from the engine's container summaries."""
from __future__ import annotations

from docker.errors import DockerException

from actors.target.engine.port_holders import port_holder, publishers

SUMMARIES = [
    {"Id": "a" * 64, "Names": ["/web"], "Image": "nginx:1", "Ports": [
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]},
    {"Id": "b" * 64, "Names": ["/squatter"], "Image": "evil:1", "Ports": [
        {"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 19500, "Type": "tcp"}]},
    {"Id": "c" * 64, "Names": ["/quiet"], "Image": "x:1", "Ports": [{"PrivatePort": 19500, "Type": "tcp"}]},
]


def test_only_a_container_publishing_the_host_port_is_named_once():
    assert publishers(SUMMARIES, 19500) == [f"container squatter ({'b' * 12}, evil:1) publishing 127.0.0.1:19500/tcp"]
    assert publishers(SUMMARIES, 8080) == [f"container web ({'a' * 12}, nginx:1) publishing 0.0.0.0:8080/tcp"]
    assert publishers(SUMMARIES, 1883) == []


def test_an_engine_out_of_reach_names_nothing():
    def unreachable(**_):
        raise DockerException("Error while fetching server API version")
    assert port_holder(19500, client_factory=unreachable) is None
