"""Whether a new admin can bind its port: a listener holds it, and so does a connection's source port."""
from __future__ import annotations

import socket

from actors.runtime.processes import port_bindable, port_in_use


def test_a_port_held_only_as_a_connections_source_port_accepts_no_connection_yet_cannot_be_bound():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as client:
            server_side, _ = listener.accept()
            with server_side:
                source_port = client.getsockname()[1]
                assert not port_bindable(listener.getsockname()[1]) and port_in_use(listener.getsockname()[1])
                # what a start waiting for "nothing listens" missed, and thespian then failed on:
                assert not port_in_use(source_port) and not port_bindable(source_port)
    assert port_bindable(source_port)  # closed connections left in TIME_WAIT do not hold it
