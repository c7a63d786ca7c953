"""Authenticated, bounded frames for thespian's TCP transport: a peer outside the agent's run cannot reach pickle.

thespian frames each message as ``b"<length>>" + pickle.dumps(...)`` and unpickles whatever arrives, so any
local process that connects to an actor's or the admin's loopback port could run code as the agent. Here a
frame's body is ``HMAC-SHA256(run key, pickle) + pickle``: a body whose MAC does not verify under the run's
key is dropped before ``pickle.loads`` sees a byte, and its connection is closed. The length prefix is
bounded (digits and value) before anything is buffered, so a peer cannot make a process hold more than one
frame's worth of memory per connection either.

What this guarantees, exactly: every byte string that reaches ``pickle.loads`` in an agent process, or in a
CLI that joins the actor system, was produced by a process holding the run's key (the agent's processes,
forked from the one that made the key, or a process that could read the 0600 key file: the agent's user or
root). It does not guarantee freshness or destination: frames are not encrypted and carry no sequence
number, so a process that obtains a frame (root sniffing loopback, or a process that binds a port an actor
of this run has just released and receives what is still sent there) can deliver it again. What it
delivers is a message the run itself pickled: it can make an actor see a message twice or from an odd
place, never make it run code of the sender's choosing.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import pickle
from typing import Any

from thespian.system.transport.streamBuffer import ReceiveBuffer
from thespian.system.utilis import thesplog

from messages.codec import MAX_MESSAGE_BYTES

KEY_BYTES = 32
MAC_BYTES = hashlib.sha256().digest_size
# The largest message plus room for thespian's envelope (addresses, its own message classes).
MAX_FRAME_BYTES = MAX_MESSAGE_BYTES + 1024 * 1024
MAX_PREFIX_DIGITS = len(str(MAX_FRAME_BYTES))


class FrameRejected(ValueError):
    """A frame is not one of this run's: a bad MAC, or a length prefix out of bounds. Never unpickled."""


class FrameCodec:
    """thespian's serializer (``dumps``/``loads``), with every body authenticated under the run's key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the run key must be {KEY_BYTES} bytes, got {len(key)}")
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)  # copied per frame: the key is set up once

    def _mac(self, body: bytes | memoryview) -> bytes:
        mac = self._keyed.copy()
        mac.update(body)
        return mac.digest()

    def dumps(self, obj: Any) -> bytes:
        body = pickle.dumps(obj)
        return self._mac(body) + body

    def loads(self, data: bytes) -> Any:
        view = memoryview(data)
        body = view[MAC_BYTES:]
        if len(view) < MAC_BYTES or not hmac.compare_digest(self._mac(body), bytes(view[:MAC_BYTES])):
            raise FrameRejected(f"a frame of {len(data)} bytes does not carry this run's MAC")
        return pickle.loads(body)


def announced_size(prefix: bytes) -> int | None:
    """The body size a frame's start announces (``b"123>..."``), or None while more prefix digits may come.

    Raises :class:`FrameRejected` for anything but 1..MAX_PREFIX_DIGITS ASCII digits followed by ``>``, and for
    a size outside MAC_BYTES+1..MAX_FRAME_BYTES: thespian's own parser takes ``int()`` of whatever precedes
    the ``>`` (signs, spaces, underscores, twenty digits) and buffers digits without end.
    """
    digits, mark, _ = prefix.partition(b">")
    if (mark or digits) and not digits.isdigit():  # bytes.isdigit() is ASCII digits only
        raise FrameRejected(f"a frame's length prefix is not a decimal number: {bytes(digits[:24])!r}")
    if len(digits) > MAX_PREFIX_DIGITS:
        raise FrameRejected(f"a frame's length prefix has more than {MAX_PREFIX_DIGITS} digits")
    if not mark:
        return None
    size = int(digits)
    if not MAC_BYTES < size <= MAX_FRAME_BYTES:
        raise FrameRejected(f"a frame announces {size} bytes, outside {MAC_BYTES + 1}..{MAX_FRAME_BYTES}")
    return size


class BoundedReceiveBuffer(ReceiveBuffer):
    """thespian's receive buffer, refusing a bad length prefix at once and a frame that fails its MAC.

    ``addMore`` raising makes the transport close the connection ("corrupted incoming data"); ``completed``
    returning None for a complete frame makes it answer a data error and close it, or, waiting for an ACK,
    retry its send: in both cases nothing was unpickled.
    """

    def addMore(self, buf: bytes) -> None:  # noqa: N802 - thespian's name
        if self._size is None:
            announced_size(self._buf + buf)  # _buf holds the prefix digits read so far
        super().addMore(buf)

    def completed(self) -> tuple[Any, bytes] | None:
        if self._size is not None and self._blen == self._size:
            try:
                return self._deserialize(self._buf), self._extra
            except FrameRejected as exc:
                rejected(str(exc))
        return None


_rejected = 0


def rejected(reason: str) -> None:
    """Count a dropped frame; log the 1st, 2nd, 4th, 8th... so a flood of them cannot flood the log.

    thesplog, not `logging`: in an actor process `logging` is forwarded over this very transport.
    """
    global _rejected
    _rejected += 1
    if _rejected & (_rejected - 1) == 0:
        thesplog("dropped a frame not from this run (%d so far): %s", _rejected, reason, level=logging.WARNING)


def rejected_count() -> int:
    """Frames this process dropped since it started."""
    return _rejected
