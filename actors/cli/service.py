"""`run.py install-service [--print]`: the systemd unit and the default configuration under /etc/fleetlet/.

The unit is ``Type=notify``: the agent says when its tree runs and feeds ``WatchdogSec`` while the root
supervisor answers (``actors.runtime.notify``); ``Restart=on-failure`` covers what run.py gives up on (it
exits 1 past its own restart limit). ``KillMode=mixed``: SIGTERM goes to run.py alone, which stops its
actors in order; what is left after ``TimeoutStopSec`` is killed. The hardening keeps what the agent needs:
the engine's socket (/run/docker.sock, unaffected by ``ProtectSystem``), its state in /var/lib/fleetlet
(``StateDirectory``), the API's socket in /run/fleetlet (``RuntimeDirectory``), and its configuration read-only.
"""
from __future__ import annotations

import os
import pathlib
import sys

UNIT_NAME = "fleetlet.service"
CONF_DIR = "/etc/fleetlet"
UNIT_DIR = "/etc/systemd/system"
STATE_DIR = "/var/lib/fleetlet"
RUN_DIR = "/run/fleetlet"
WATCHDOG_SEC = 60  # run.py asks the supervisor every 2 s; a minute of silence is a hung agent

# What the shipped defaults become on a device: everything the agent writes under its state directory.
DEVICE_SETTINGS = {
    ("store", "path"): f"{STATE_DIR}/agent.db",
    ("api", "socket"): f"{RUN_DIR}/api.sock",
    ("api", "key_file"): f"{STATE_DIR}/api.key",
    **{(section, key): f"{CONF_DIR}/pki/{name}" for section in ("mqtt", "cloud")
       for key, name in (("ca_file", "ca.crt"), ("cert_file", "device.crt"), ("key_file", "device.key"))},
}


def register(subparsers, common) -> None:
    parser = subparsers.add_parser("install-service", help="install the systemd unit and /etc/fleetlet/agent.toml")
    common(parser)
    parser.add_argument("--print", action="store_true", dest="print_only", help="only print the unit")
    parser.add_argument("--unit-dir", default=UNIT_DIR, help=f"where the unit goes (default {UNIT_DIR})")
    parser.add_argument("--conf-dir", default=CONF_DIR, help=f"where agent.toml goes (default {CONF_DIR})")


def unit_text(python: str, run_py: str, conf_dir: str = CONF_DIR) -> str:
    """The unit: pure."""
    return f"""[Unit]
Description=Fleetlet device agent (target state and device shadow)
Documentation=file://{pathlib.Path(run_py).parent}/README.md
Wants=network-online.target docker.service
After=network-online.target docker.service

[Service]
Type=notify
NotifyAccess=main
ExecStart={python} {run_py} agent --config {conf_dir}/agent.toml
WorkingDirectory={STATE_DIR}
Restart=on-failure
RestartSec=5
WatchdogSec={WATCHDOG_SEC}
TimeoutStartSec=120
TimeoutStopSec=30
KillMode=mixed
UMask=0077
StateDirectory=fleetlet
StateDirectoryMode=0700
RuntimeDirectory=fleetlet
RuntimeDirectoryMode=0750
ConfigurationDirectory=fleetlet
NoNewPrivileges=yes
ProtectSystem=full
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

[Install]
WantedBy=multi-user.target
"""


def device_config(shipped: str) -> str:
    """The shipped ``conf/agent.toml`` with the device's paths (DEVICE_SETTINGS) in place of the development ones."""
    section, out = "", []
    for line in shipped.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped.strip("[]")
        key = stripped.partition("=")[0].strip()
        if (section, key) in DEVICE_SETTINGS and not stripped.startswith("#"):
            line = f'{key} = "{DEVICE_SETTINGS[section, key]}"'
        out.append(line)
    return "\n".join(out) + "\n"


def dispatch(args) -> int:
    root = pathlib.Path(__file__).resolve().parents[2]
    unit = unit_text(sys.executable, str(root / "run.py"), args.conf_dir)
    if args.print_only:
        print(unit, end="")
        return 0
    unit_path = pathlib.Path(args.unit_dir) / UNIT_NAME
    conf_path = pathlib.Path(args.conf_dir) / "agent.toml"
    try:
        unit_path.parent.mkdir(parents=True, exist_ok=True)
        unit_path.write_text(unit)
        os.chmod(unit_path, 0o644)
        conf_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if conf_path.exists():
            print(f"kept the existing {conf_path}")
        else:
            conf_path.write_text(device_config((root / "conf" / "agent.toml").read_text()))
            os.chmod(conf_path, 0o640)
            print(f"wrote {conf_path} (edit device.*, mqtt.*, cloud.*; put the device's certificates where it says)")
    except OSError as exc:
        print(f"install-service: {exc} (run it as root, or use --print)", file=sys.stderr)
        return 1
    print(f"wrote {unit_path}\nenable and start it with:\n  systemctl daemon-reload\n"
          f"  systemctl enable --now {UNIT_NAME}\nthen: journalctl -u {UNIT_NAME} -f; "
          f"{sys.executable} {root / 'run.py'} status --config {conf_path}")
    return 0
