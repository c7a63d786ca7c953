"""`depends_on` with `condition: service_healthy` on the real engine, in a running agent (persistence +
reconciler): the dependent is not created while its dependency's health check has not passed, and is
created and started once it has.

The dependency turns healthy when the test creates a file in it; `start_period` keeps its failing checks
from counting meanwhile (so it stays "starting", never "unhealthy", and the release is not rolled back).
"""
from __future__ import annotations

import calendar
import time

from messages.bus.engine import ReconcileNow
from tests.integration.test_reconciler_engine import document, engine_agent, set_target, tell  # noqa: F401
from tests.support.polling import wait_for

RUN = "trap 'exit 0' TERM; sleep 86400 & wait"
DB = {"command": ["/bin/sh", "-c", f"mkdir -p /tmp; {RUN}"],  # the image has no /tmp
      "healthcheck": {"test": ["CMD", "/bin/sh", "-c", "test -f /tmp/ok"], "interval": "1s", "retries": 1,
                      "start_period": "120s"}}
WEB = {"command": ["/bin/sh", "-c", RUN], "depends_on": {"db": {"condition": "service_healthy"}}}


def health(container) -> str:
    container.reload()
    return (container.attrs["State"].get("Health") or {}).get("Status", "")


def test_a_service_healthy_dependent_starts_only_once_its_dependency_is_healthy(engine_agent):  # noqa: F811
    start, device = engine_agent
    system = start(release_tick=0.2)  # a release underway re-reads the engine every tick
    set_target(system, document({"1": {"db": DB, "web": WEB}}), '"v1"')
    (db,) = wait_for(lambda: (found := device.containers().get("db")) and found[0].status == "running" and found,
                     what="db running")
    assert health(db) == "starting"

    # Several passes of the reconciler see db running but not healthy: web gets no container in any of them.
    for _ in range(5):
        seen = len(device.messages("ReconcilePassFinished"))
        wait_for(lambda seen=seen: len(device.messages("ReconcilePassFinished")) > seen, what="another pass")
        assert "web" not in device.containers()
        assert health(db) == "starting", "db must still be unready for this check to mean anything"

    healthy_from = time.time()
    assert db.exec_run(["/bin/sh", "-c", "touch /tmp/ok"]).exit_code == 0
    (web,) = wait_for(lambda: (found := device.containers().get("web")) and found[0].status == "running" and found,
                      timeout=20.0, what="web running once db is healthy")
    assert health(db) == "healthy"
    created = calendar.timegm(time.strptime(web.attrs["Created"][:19], "%Y-%m-%dT%H:%M:%S"))  # UTC, whole seconds
    assert created >= int(healthy_from)
    device.wait_converged('"v1"')


def test_after_a_commit_a_dependent_waits_for_health_and_starts_as_soon_as_it_passes(engine_agent):  # noqa: F811
    """No release is underway, so nothing but the wait for health itself makes the reconciler read the engine
    again before its drift timer (30 s here)."""
    start, device = engine_agent
    system = start(release_tick=0.2)
    db_ready = {**DB, "command": ["/bin/sh", "-c", f"mkdir -p /tmp && touch /tmp/ok; {RUN}"]}
    set_target(system, document({"1": {"db": db_ready, "web": WEB}}), '"v1"')
    wait_for(lambda: (reports := device.messages("CurrentStateObserved"))
             and reports[-1]["state"].get("release", {}).get("status") == "done", what="the release committed")
    (db,) = device.containers()["db"]
    assert db.exec_run(["rm", "/tmp/ok"]).exit_code == 0
    wait_for(lambda: health(db) == "unhealthy", what="db unhealthy")
    (web,) = device.containers()["web"]
    web.remove(force=True)

    seen = len(device.messages("ReconcilePassFinished"))
    tell(system, ReconcileNow("test"))
    wait_for(lambda: len(device.messages("ReconcilePassFinished")) > seen, what="the pass asked for")
    assert "web" not in device.containers() and health(db) == "unhealthy"

    assert db.exec_run(["/bin/sh", "-c", "touch /tmp/ok"]).exit_code == 0
    wait_for(lambda: (found := device.containers().get("web")) and found[0].status == "running",
             timeout=10.0, what="web running again once db is healthy, well before the drift timer")
