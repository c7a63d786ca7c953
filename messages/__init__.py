"""What crosses a process boundary, and how.

- :mod:`messages.codec`: the strict msgpack codec of typed messages;
- :mod:`messages.bus`: the actor-to-actor messages, one module per conversation;
- :mod:`messages.protocol`: the device<->cloud formats (HTTP paths, topics, JSON, patches, shadow
  documents, target states), shared by the agent, the cloud and the store;
- :mod:`messages.transport`: the MQTT link, the HTTP client and the backoff both sides use.

Importing this package registers every bus message type, so any process can decode any message.
"""
from messages import bus  # noqa: F401  (registers every bus message)
from messages.codec import (
    MessageError,
    decode,
    encode,
    message,
    message_class,
    registered,
)

__all__ = ["MessageError", "decode", "encode", "message", "message_class", "registered"]
