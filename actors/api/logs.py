"""A service's logs, streamed from the engine to an API client (``GET .../logs?tail=N&follow=1``).

Each stream is a thread that only copies the engine's bytes to its client's socket and closes it: it never
sends the actor a message (the engineering notes: sends from threads inside an actor may be lost under a
burst), so the actor's state is never touched from it. At most ``MAX_STREAMS`` run at once; a client that
stops reading, or leaves, ends its stream.
"""
from __future__ import annotations

import threading

from actors.api.http import error_response, render, stream_head
from actors.api.routes import GetLogs
from actors.api.server import Connection
from actors.target.engine.adapter import LABEL_APP_ID, LABEL_MANAGED, LABEL_OWNER, LABEL_SERVICE_NAME

MAX_STREAMS = 8
SEND_TIMEOUT = 30.0  # a follower that reads nothing for this long is cut off


class Streams:
    def __init__(self, owner: str):
        self.owner = owner
        self.threads: list[threading.Thread] = []

    def start(self, conn: Connection, action: GetLogs) -> None:
        self.threads = [thread for thread in self.threads if thread.is_alive()]
        if len(self.threads) >= MAX_STREAMS:
            conn.answer(render(error_response(503, f"{MAX_STREAMS} log streams are open already")))
            return
        thread = threading.Thread(target=self._copy, args=(conn, action), daemon=True, name="api-logs")
        self.threads.append(thread)
        thread.start()

    def _copy(self, conn: Connection, action: GetLogs) -> None:
        import docker

        client, streaming = None, False
        try:
            client = docker.from_env(timeout=10)
            labels = [f"{LABEL_MANAGED}=1", f"{LABEL_OWNER}={self.owner}", f"{LABEL_APP_ID}={action.app_id}",
                      f"{LABEL_SERVICE_NAME}={action.service_name}"]
            found = client.containers.list(all=True, filters={"label": labels})
            if not found:
                conn.answer(render(error_response(404, f"{action.app_id}/{action.service_name} has no container")))
                return
            container = max(found, key=lambda c: c.attrs.get("Created", ""))
            conn.sock.setblocking(True)
            conn.sock.settimeout(SEND_TIMEOUT)
            conn.sock.sendall(stream_head(200, "text/plain; charset=utf-8"))
            streaming = True
            if action.follow:
                for chunk in container.logs(stream=True, follow=True, tail=action.tail):
                    conn.sock.sendall(chunk)
            else:
                conn.sock.sendall(container.logs(tail=action.tail))
        except OSError:
            pass  # the client left, or stopped reading
        except Exception as exc:  # noqa: BLE001 - the engine's errors end this stream, never the actor
            try:
                if streaming:
                    conn.sock.sendall(f"\n[fleetlet: the engine's log stream failed: {exc}]\n".encode())
                else:
                    conn.sock.sendall(render(error_response(503, f"the engine's logs: {exc}")))
            except OSError:
                pass
        finally:
            conn.close()
            if client is not None:
                client.close()
