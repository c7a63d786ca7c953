"""``run.py pki init|device|service|broker-config``: the development PKI and the broker's configuration.

Exit status: 0 done, 1 refused (an existing CA, a missing one), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import sys

from cloud import pki
from conf.schema import PORT


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("pki", help="create a development CA, issue certificates, write the broker's "
                                               "configuration and ACL")
    actions = parser.add_subparsers(dest="pki_action", required=True, metavar="init|device|service|broker-config")
    init = actions.add_parser("init", help="DIR/ca.crt+key, DIR/server.crt+key (127.0.0.1, ::1, localhost), "
                                           "DIR/cloud.crt+key (the cloud's identity)")
    init.add_argument("dir")
    init.add_argument("--force", action="store_true", help="replace an existing CA (invalidates what it issued)")
    device = actions.add_parser("device", help="DIR/UUID.crt and DIR/UUID.key (0600), CN = the thing name")
    device.add_argument("uuid")
    device.add_argument("--dir", required=True)
    device.add_argument("--thing", help="the device's thing name (default: its uuid)")
    service = actions.add_parser("service", help="DIR/NAME.crt+key: one more identity that may serve every thing")
    service.add_argument("name")
    service.add_argument("--dir", required=True)
    broker = actions.add_parser("broker-config", help="DIR/mosquitto.conf (TLS on 127.0.0.1:PORT) and DIR/acl, "
                                                      "from the certificates in DIR")
    broker.add_argument("dir")
    broker.add_argument("--port", type=int, default=8883)
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--plain-port", type=int, default=None,
                        help="also an anonymous plaintext listener (loopback only)")
    broker.add_argument("--user", default=None, help="whom a broker started as root runs as")


def dispatch(args: argparse.Namespace) -> int:
    try:
        for flag in ("port", "plain_port"):
            value = getattr(args, flag, None)
            if value is not None and PORT(value):
                print(f"--{flag.replace('_', '-')} {PORT(value)}", file=sys.stderr)
                return 2
        if args.pki_action == "init":
            base = pki.init(args.dir, force=args.force)
            print(f"CA, server and cloud identity in {base}")
        elif args.pki_action == "device":
            print(pki.issue_device(args.dir, args.uuid, args.thing))
        elif args.pki_action == "service":
            print(pki.issue_service(args.dir, args.name, args.name))
        else:
            print(pki.broker_config(args.dir, args.port, args.host, args.plain_port, user=args.user))
    except pki.PkiError as exc:
        print(f"pki: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, pki.PkiArgumentError) else 1
    except OSError as exc:
        print(f"pki: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
