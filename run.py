#!/usr/bin/env python3
"""Fleetlet command line: run the agent (default), query it, and operate the reference cloud."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence

import conf
from actors.cli import doctor, shadow_watch
from actors.cli import plan as plan_cli
from actors.cli import service as service_cli
from cloud import cli as cloud_cli
from cloud import pki_cli
from conf.agent import check_link_files
from fleetlet_version import __version__


def _common(parser: argparse.ArgumentParser, top: bool = False) -> None:
    # Accepted before and after the command; a subcommand must not reset what the top level parsed.
    parser.add_argument("--config", metavar="PATH", default=None if top else argparse.SUPPRESS,
                        help="configuration file (defaults: conf/<kind>.toml)")
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append",
                        default=[] if top else argparse.SUPPRESS, dest="overrides",
                        help="override one configuration key (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)  # prog: run.py or fleetlet, as invoked
    parser.add_argument("--version", action="version", version=f"fleetlet {__version__}")
    _common(parser, top=True)
    commands = parser.add_subparsers(dest="command")
    agent = commands.add_parser("agent", help="run the device agent (the default)")
    _common(agent)
    demo = commands.add_parser("demo", help="start Mosquitto and the reference cloud on loopback, give the "
                                            "demo device a target and a desired shadow, run the agent")
    _common(demo)
    status = commands.add_parser("status", help="show each actor's pid, state, restarts and last error")
    _common(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    plan_cli.register(commands, _common)
    service_cli.register(commands, _common)
    doctor.register(commands, _common)
    shadow_actions = cloud_cli.register(commands, _common)
    shadow_watch.add_watch_parser(shadow_actions, _common)  # device-side: it reads the agent's configuration
    pki_cli.register(commands)
    return parser


def run_agent(config: dict) -> int:
    # Everything the agent creates (var/, the store and its WAL, the run and key files) is its own alone.
    os.umask(0o077)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # Heavy libraries are imported before the actor system forks, so every actor process shares them.
    import docker  # noqa: F401
    import gmqtt  # noqa: F401
    import msgpack  # noqa: F401
    import peewee  # noqa: F401
    import prometheus_client  # noqa: F401

    from actors.runtime.logformat import configure_process
    from actors.runtime.processes import become_subreaper
    from actors.runtime.root import supervise
    from actors.target.engine.port_holders import port_holder

    configure_process(config["agent"]["log_level"], config["agent"]["log_format"])
    become_subreaper()
    return supervise(config, stop, port_holder=port_holder)


def run_status(config: dict, as_json: bool) -> int:
    from actors.api.client import ApiUnavailable, call_json
    from actors.api.views import status_lines

    try:
        status, doc = call_json(config, "GET", "/v1/status")
    except ApiUnavailable as exc:
        # The API is one actor among others: while it restarts or cools down, the supervisor still answers
        # over the run's authenticated admin, and status is what an operator needs most then.
        doc = status_over_admin(config)
        if doc is None:
            print(f"status: {exc}", file=sys.stderr)
            return 1
        status = 200
    if status != 200 or not isinstance(doc, dict):
        print(f"status: the agent answered {status}: {doc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if as_json else "\n".join(status_lines(doc)))
    return 0


def status_over_admin(config: dict) -> dict | None:
    """The status document from the supervisor itself (actors.runtime.admin), for when the local API does not
    answer; None when no agent answers there either."""
    from actors.api.views import status_document
    from actors.runtime.admin import AdminError, query_status
    from store import Store, StoreError

    try:
        reply = query_status(config)
    except AdminError as exc:
        print(f"status: {exc}", file=sys.stderr)
        return None
    if reply is None:
        return None
    try:
        with Store.open(config["store"]["path"], readonly=True) as store:
            target = (store.load_target(), store.last_target_rejection())
    except StoreError:
        target = (None, None)
    return status_document(reply, recorded_errors(config), target)


def recorded_errors(config: dict) -> Sequence[Mapping[str, object]]:
    """What the device could not do (a value it cannot apply, a rejected target), from the store."""
    from store import Store, StoreError

    try:
        with Store.open(config["store"]["path"], readonly=True) as store:
            return store.errors()
    except StoreError as exc:
        return [{"source": "store", "key": "open", "message": str(exc), "count": 1}]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "agent"
    if command == "pki":
        return pki_cli.dispatch(args)  # operator tooling: no configuration to read
    if command in cloud_cli.COMMANDS and getattr(args, "shadow_action", None) != "watch":
        return cloud_cli.dispatch(args)  # the cloud's commands read conf/cloud.toml, not the agent's
    try:
        config = conf.load("agent", args.config, args.overrides)
        if command == "agent":  # the demo checks them once it has made the development PKI
            check_link_files(config)
    except conf.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if command == "agent":
        return run_agent(config)
    if command == "demo":
        from cloud import demo
        return demo.run(config, run_agent)
    if command == "status":
        return run_status(config, args.json)
    if command in ("plan", "poll-now"):
        return plan_cli.dispatch(args, config)
    if command == "shadow":
        return shadow_watch.dispatch(args, config)
    if command == "doctor":
        return doctor.run(config)
    if command == "install-service":
        return service_cli.dispatch(args)
    raise AssertionError(command)


if __name__ == "__main__":
    sys.exit(main())
