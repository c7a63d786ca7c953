"""``run.py cloud``: the store, the shadow service on MQTT and the HTTP API in one process.

The asyncio loop (main thread) owns the MQTT connection and the shadow service; the HTTP server runs
in its own thread and hands shadow requests and publishes to the loop; database work runs in a small
pool of worker threads, each with its own connection. SIGTERM or SIGINT stops it cleanly.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import peewee

from cloud.db import open_store
from cloud.http_api import CloudApi
from cloud.http_server import ApiServer
from cloud.settings import CloudSettings, MqttSettings
from cloud.shadow_service import ShadowService, subscription_topics
from cloud.store import CloudStore, CloudStoreError
from messages.transport.mqtt import LinkSettings, MqttLink
from messages.transport.tls import TlsSettings

STORE_WORKERS = 4  # database connections; SQLite serialises writers anyway
SETTLE_SECONDS = 5.0  # on stop, time given to requests under way
log = logging.getLogger("fleetlet.cloud")


def run(settings: CloudSettings) -> int:
    """Serve until SIGTERM/SIGINT; 0 then, 2 when the cloud cannot start."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("gmqtt").setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))
    for note in settings.notes:
        log.warning("%s", note)
    seed = settings.seed
    try:
        store = CloudStore(open_store(settings.store))
        if seed is not None:
            try:
                store.register_device(seed.uuid, seed.thing, seed.token)
            except ValueError as exc:  # the seed's token is already another device's
                log.error("cannot register the seed device %s: %s", seed.uuid, exc)
                return 2
        store.close()
    except (peewee.PeeweeException, CloudStoreError, ValueError) as exc:  # ValueError: a bad path or URL
        log.error("cannot open the store (%s): %s", settings.store.describe(), exc)
        return 2
    with ThreadPoolExecutor(STORE_WORKERS, thread_name_prefix="store") as executor:
        try:
            asyncio.run(_serve(settings, store, executor))
        except OSError as exc:  # ssl.SSLError too: an unusable certificate or key
            log.error("cannot serve HTTP on %s:%d: %s", settings.http_host, settings.http_port,
                      exc.strerror or exc)
            return 2
    log.info("cloud stopped")
    return 0


async def _serve(settings: CloudSettings, store: CloudStore, executor: ThreadPoolExecutor) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    link = MqttLink(link_settings(settings.mqtt), subscription_topics(),
                    on_message=lambda topic, payload: service.on_mqtt_request(topic, payload))
    service = ShadowService(store, executor, link.publish, settings.limits, settings.max_queued_per_thing,
                            time.time)

    def health() -> dict:  # unauthenticated: readiness, nothing about the store or the broker
        return {"ready": link.ready}

    server = ApiServer(CloudApi(settings, store, executor, service, loop, link.publish, health, time.time))
    threading.Thread(target=server.serve_forever, args=(0.1,), name="http", daemon=True).start()
    log.info("HTTP API on %s; store %s; broker %s:%d",
             settings.base_url, settings.store.describe(), settings.mqtt.host, settings.mqtt.port)
    link_stop = asyncio.Event()  # set after the settle: the answers of requests under way still go out
    linked = asyncio.create_task(link.run(link_stop))
    try:
        await stop.wait()
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        await service.settle(SETTLE_SECONDS)
        link_stop.set()
        await linked


def link_settings(mqtt: MqttSettings) -> LinkSettings:
    """The shared link, as the cloud wants it: MQTT 5, a persistent session, and its fixed reconnect delay as
    a backoff whose floor is its cap (retries every half to one ``reconnect_delay``). Over TLS the broker takes
    the certificate's CN as the client id; ``client_id`` names the session on a plaintext listener."""
    tls = TlsSettings(mqtt.ca_file, mqtt.cert_file, mqtt.key_file) if mqtt.tls else None
    return LinkSettings(mqtt.host, mqtt.port, mqtt.client_id, protocol=5, keepalive=mqtt.keepalive,
                        session_expiry=mqtt.session_expiry, reconnect_min=mqtt.reconnect_delay,
                        reconnect_max=mqtt.reconnect_delay, publish_window=mqtt.publish_window,
                        outbox_limit=mqtt.outbox_limit, tls=tls)
