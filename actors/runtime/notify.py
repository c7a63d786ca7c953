"""sd_notify for systemd's ``Type=notify``: readiness, the watchdog and a status line, as datagrams to
``$NOTIFY_SOCKET`` (a path, or an abstract socket when it starts with ``@``). Without the variable (not under
systemd) nothing is sent. A failed send is ignored: the service manager's watchdog is the judge of that.
"""
from __future__ import annotations

import os
import socket


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``state`` (``"READY=1"``, ``"WATCHDOG=1"``, ``"STATUS=..."``, newline-separated); True if sent."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), target)
    except OSError:
        return False
    return True
