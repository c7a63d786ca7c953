"""``run.py shadow watch THING [--name S]``: print a shadow's deltas and reports as they happen.

An observer on the device's broker (clean session, its own client id): it subscribes to the shadow's
update, update/delta, update/accepted and update/rejected topics and prints one line per message, or one
JSON object per line with ``--json``. It ends on Ctrl-C / SIGTERM, or after ``--count`` messages.
"""
from __future__ import annotations

import argparse
import datetime
import json
import queue
import secrets
import signal
import sys
import threading
import time
from typing import TextIO

from actors.shadow.payloads import PayloadError, PayloadLimits, decode_payload
from messages.protocol.shadow_document import ShadowError
from messages.protocol.shadow_topics import CLASSIC_SHADOW, shadow_topics
from messages.transport.mqtt import LinkSettings, MqttLink

_LIMITS = PayloadLimits(max_bytes=1024 * 1024, max_depth=64)


def add_watch_parser(actions, common) -> None:
    """Add ``watch`` to the ``run.py shadow`` sub-commands (``actions``); ``common`` adds --config/--set."""
    parser = actions.add_parser("watch", help="print a shadow's deltas and reports as they happen")
    common(parser)
    parser.add_argument("thing")
    parser.add_argument("--name", default="", help="a named shadow (default: the classic shadow)")
    parser.add_argument("--profile", choices=("aws", "emqx"), help="topic namespace (default: shadow.profile)")
    parser.add_argument("--count", type=int, help="stop after this many messages")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def dispatch(args: argparse.Namespace, config: dict) -> int:
    """Run ``watch`` with the agent configuration ``config`` (its [mqtt] names the broker)."""
    return watch(config, args.thing, args.name, args.profile, count=args.count, as_json=args.json)


def describe(kind: str, payload: bytes, at: float, as_json: bool = False) -> str:
    """One output line for a message on the ``kind`` topic (update, delta, accepted, rejected)."""
    stamp = datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat(timespec="milliseconds")
    try:
        body = decode_payload(payload, _LIMITS)
    except PayloadError as exc:
        if as_json:
            return json.dumps({"at": stamp, "kind": kind, "error": str(exc)})
        return f"{stamp} {kind:<8} unreadable ({exc}): {payload[:80]!r}"
    state = body.get("state")
    if not isinstance(state, dict):
        state = {}
    if kind == "update" and "reported" in state and "desired" not in state:
        kind = "report"
    if as_json:
        return json.dumps({"at": stamp, "kind": kind, "payload": body}, separators=(",", ":"))
    version = f"v{body['version']}" if "version" in body else "v-"
    detail = f"{body.get('code')} {body.get('message', '')}" if kind == "rejected" else \
        json.dumps(state, separators=(",", ":"))
    return f"{stamp} {kind:<8} {version:<6} {body.get('clientToken', '-')} {detail}"


def watch(config: dict, thing: str, name: str = CLASSIC_SHADOW, profile: str | None = None,
          out: TextIO = sys.stdout, stop: threading.Event | None = None, count: int | None = None,
          as_json: bool = False) -> int:
    """Print until ``stop`` is set (Ctrl-C / SIGTERM when run from the main thread) or ``count`` messages."""
    profile = profile or config["shadow"]["profile"]
    try:
        topics = shadow_topics(profile, thing, name)
    except (ValueError, ShadowError) as exc:
        print(f"shadow watch: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    kinds = {topics.update: "update", topics.update_delta: "delta", topics.update_accepted: "accepted",
             topics.update_rejected: "rejected"}
    events: queue.Queue = queue.Queue()
    stop = stop or _stop_on_signals()
    settings = LinkSettings.from_config(config, client_id=f"fleetlet-watch-{secrets.token_hex(4)}", clean=True)
    link = MqttLink(settings, list(kinds), lambda topic, payload: events.put((topic, payload, time.time())),
                    lambda ready: events.put((None, ready, time.time())))
    link.start()
    printed = 0
    try:
        while not stop.is_set() and (count is None or printed < count):
            try:
                topic, payload, at = events.get(timeout=0.1)
            except queue.Empty:
                continue
            if topic is None:
                state = f"watching {topics.update} on {settings.host}:{settings.port}" if payload else \
                    "connection lost; reconnecting"
                print(state, file=sys.stderr, flush=True)
                continue
            print(describe(kinds[topic], payload, at, as_json), file=out, flush=True)
            printed += 1
    finally:
        link.stop()
    return 0


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    return stop
