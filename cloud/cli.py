"""The cloud's commands for run.py: ``cloud`` (serve), ``shadow get|update|delete`` and ``target set|get``,
and ``target from-compose`` (prints a docker-compose file's target state; ``target set`` takes one too).

The operator commands call a running cloud over HTTP with the admin token, both read from the cloud
configuration (``--config`` / ``--set``); over https when the cloud serves it (``http.cert_file``), verifying
its certificate with ``http.ca_file``. Exit status: 0 done, 1 refused by the cloud or unreachable,
2 bad configuration or arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

import conf
from cloud.compose import ComposeError, default_app_name, load_compose, looks_like_compose
from cloud.settings import CloudSettings, load_cloud_settings
from messages.transport.http import CloudClient, CloudError, Response

COMMANDS = ("cloud", "shadow", "target")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: Callable[[argparse.ArgumentParser], object],
             ) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add the cloud's commands to run.py's ``subparsers``; ``common(parser)`` adds --config/--set.

    Returns the ``shadow`` sub-commands, so that run.py can add the device-side ``watch`` beside them."""
    cloud = subparsers.add_parser("cloud", help="run the reference cloud (HTTP API + shadow service)")
    common(cloud)

    shadow = subparsers.add_parser("shadow", help="get, update or delete a shadow on a running cloud")
    common(shadow)
    actions = shadow.add_subparsers(dest="shadow_action", required=True, metavar="get|update|delete|watch")
    for action in ("get", "update", "delete"):
        parser = actions.add_parser(action, help=f"{action} the thing's classic shadow, or a named one")
        common(parser)
        parser.add_argument("thing")
        parser.add_argument("--name", default="", help="a named shadow (default: the classic shadow)")
        if action == "update":
            parser.add_argument("document", help='the request, e.g. \'{"state": {"desired": {...}}}\'; - reads stdin')
    shadow_actions = actions

    target = subparsers.add_parser("target", help="set or show a device's target state on a running cloud")
    common(target)
    actions = target.add_subparsers(dest="target_action", required=True, metavar="set|get")
    actions.metavar = "set|get|from-compose"
    setter = actions.add_parser("set", help="set a device's target state from a JSON file or a compose file")
    common(setter)
    setter.add_argument("uuid")
    setter.add_argument("file", help="the target state document or a docker-compose file; - reads stdin")
    compose_options(setter)
    converter = actions.add_parser("from-compose", help="print the target state of a docker-compose file")
    common(converter)
    converter.add_argument("file", help="the docker-compose file; - reads stdin")
    compose_options(converter)
    getter = actions.add_parser("get", help="print a device's target state")
    common(getter)
    getter.add_argument("uuid")
    return shadow_actions


def compose_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app-id", help="the app's id (default: the file's name:, else its directory's name)")
    parser.add_argument("--app-name", help="the app's name (default: its id)")


def dispatch(args: argparse.Namespace) -> int:
    try:
        settings = load_cloud_settings(args.config, args.overrides)
    except conf.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "cloud":
        from cloud.server import run  # the server's imports are not needed by the operator commands
        return run(settings)
    try:
        if args.command == "target" and args.target_action == "from-compose":
            print(json.dumps(_compose_target(args, _read(args.file)), indent=2, ensure_ascii=False))
            return 0
        return _operate(args, settings)
    except OSError as exc:
        print(f"cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except CloudError as exc:
        print(f"no cloud answering at {settings.base_url}: {exc.__cause__ or exc}", file=sys.stderr)
        return 1
    except ComposeError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as fh:
        return fh.read()


def _compose_target(args: argparse.Namespace, data: bytes) -> dict:
    """The target state of the compose file in ``data``, interpolated from this process's environment."""
    default = "app" if args.file == "-" else default_app_name(args.file)
    return load_compose(data, os.environ, args.app_id, args.app_name, default)


def _operate(args: argparse.Namespace, settings: CloudSettings) -> int:
    client = CloudClient(settings.base_url, settings.admin_token, tls=settings.operator_tls())
    if args.command == "shadow":
        if args.shadow_action == "get":
            return _show(client.get_shadow(args.thing, args.name))
        if args.shadow_action == "delete":
            return _show(client.delete_shadow(args.thing, args.name))
        document = sys.stdin.buffer.read() if args.document == "-" else args.document.encode()
        return _show(client.update_shadow(args.thing, document, args.name))
    if args.target_action == "get":
        return _show(client.get_target(args.uuid))
    document = _read(args.file)
    if looks_like_compose(document):
        document = json.dumps(_compose_target(args, document)).encode()
    return _show(client.set_target(args.uuid, document))


def _show(reply: Response) -> int:
    try:
        body = reply.json()
    except CloudError:
        body = reply.body.decode("utf-8", "replace")
    text = json.dumps(body, indent=2, ensure_ascii=False) if not isinstance(body, str) else body
    if reply.ok:
        print(text)
        return 0
    print(f"the cloud answered {reply.status}: {text}", file=sys.stderr)
    return 1


def _main(argv: list[str] | None = None) -> int:
    """``python -m cloud.cli ...``: the same commands without run.py."""
    parser = argparse.ArgumentParser(prog="python -m cloud.cli")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", default=argparse.SUPPRESS)
        sub.add_argument("--set", action="append", dest="overrides", default=argparse.SUPPRESS)

    parser.set_defaults(config=None, overrides=[])
    register(parser.add_subparsers(dest="command", required=True), common)
    return dispatch(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(_main())
