"""The actor bus: typed messages exchanged by Fleetlet's actors, one module per conversation.

Importing this package registers every message type, so any process can decode any message.
"""
from messages.bus import engine, outbox, runtime, shadow, target  # noqa: F401  (registers the messages)
