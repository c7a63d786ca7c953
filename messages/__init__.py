"""Typed messages exchanged by Fleetlet's actors, and the strict codec that carries them.

Importing this package registers every message type, so any process can decode any message.
"""
from messages.codec import MessageError, decode, encode, message, message_class, registered
from messages import runtime, sync  # noqa: F401  (registers the runtime and sync messages)
from messages import containers  # noqa: F401  (registers the reconciler's and its workers' messages)
from messages import shadow  # noqa: F401  (registers the shadow listener's messages)

__all__ = ["MessageError", "decode", "encode", "message", "message_class", "registered"]
