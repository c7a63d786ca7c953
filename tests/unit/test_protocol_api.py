"""The HTTP paths and the poll-now topic (messages.protocol.api): what the agent builds, the cloud routes."""
from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messages.protocol import api


@pytest.mark.parametrize("build, route", [
    (api.target_state_path, api.TARGET_STATE_ROUTE),
    (api.device_state_path, api.DEVICE_STATE_ROUTE),
    (api.device_path, api.DEVICE_ROUTE),
    (api.shadow_path, api.SHADOW_ROUTE),
    (api.emqx_shadow_path, api.EMQX_SHADOW_ROUTE),
])
@given(ident=st.text(min_size=1, max_size=20))
def test_property_every_built_path_is_routed_back_to_its_id(build, route, ident):
    match = re.fullmatch(route, build(ident))
    assert match is not None and [unquote(group) for group in match.groups()] == [ident]


def test_the_paths_are_the_documented_ones():
    assert api.target_state_path("pump 7") == "/api/v1/device/pump%207/target-state"
    assert api.device_state_path("a/b") == "/api/v1/device/a%2Fb/state"
    assert api.shadow_path("lamp-1") == "/things/lamp-1/shadow"
    assert api.emqx_shadow_path("lamp-1") == "/api/v1/thing-datas/lamp-1/shadow"
    assert api.DEVICE_STATE_PATH == "/api/v1/device/state"
    assert re.fullmatch(api.DEVICE_STATE_ROUTE, api.DEVICE_STATE_PATH) is None  # the PATCH is not a device's GET
    assert api.poll_now_topic("demo-device") == "fleetlet/devices/demo-device/poll-now"
