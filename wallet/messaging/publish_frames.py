"""The AMQP 0-9-1 frames of a batch of ``basic.publish``, encoded for the relay's one write.

Every relay message has the same shape: ``basic.publish`` to one exchange (not mandatory, not
immediate), a content header with exactly five properties (``content_type``, ``delivery_mode``,
``message_id``, ``type``, ``app_id``) and the body, split at the connection's frame size. pamqp
encodes any frame of the protocol, checking each property's type through a generic table: ~40% of
the relay's publishing CPU in the profile (DESIGN.md §6). This encodes that one shape with
``struct``; ``tests/unit/test_publish_frames.py`` holds it byte for byte to pamqp's encoding,
which stays the reference.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from wallet.messaging.inprocess import OutgoingEvent

METHOD, HEADER, BODY = 1, 2, 3
FRAME_END = b"\xce"
BASIC_CLASS, PUBLISH_METHOD = 60, 40
DELIVERY_MODE = bytes((2,))  # persistent
CONTENT_TYPE = "application/json"
# Basic property flags, high bit first: content-type 15, delivery-mode 12, message-id 7, type 5,
# app-id 3 (AMQP 0-9-1, 4.2.6.1 and the basic class's property list).
FLAGS = (1 << 15) | (1 << 12) | (1 << 7) | (1 << 5) | (1 << 3)

_frame_head = struct.Struct(">BHI").pack  # type, channel, payload size
_publish_head = struct.Struct(">HHH").pack  # class, method, reserved-1
_header_head = struct.Struct(">HHQH").pack  # class, weight, body size, property flags


def shortstr(text: str) -> bytes:
    data = text.encode()
    if len(data) > 255:
        raise ValueError(f"AMQP short string longer than 255 bytes: {text[:40]!r}…")
    return bytes((len(data),)) + data


def publish_frames(
    events: Sequence[OutgoingEvent], *, exchange: str, app_id: str, channel: int, max_body_frame: int
) -> bytes:
    """The method, header and body frames of each event, in order, as one buffer.

    ``max_body_frame``: the largest body frame payload (the connection's ``frame_max`` less the
    frame's 8 bytes of envelope); a longer body goes out in several body frames.
    """
    exchange_field = shortstr(exchange)
    tail = shortstr(app_id)
    content_type = shortstr(CONTENT_TYPE)
    parts: list[bytes] = []
    append = parts.append
    for event in events:
        body = event.body
        method = b"".join(
            (
                _publish_head(BASIC_CLASS, PUBLISH_METHOD, 0),
                exchange_field,
                shortstr(event.routing_key),
                b"\x00",
            )
        )
        header = b"".join(
            (
                _header_head(BASIC_CLASS, 0, len(body), FLAGS),
                content_type,
                DELIVERY_MODE,
                shortstr(event.message_id),
                shortstr(event.message_type),
                tail,
            )
        )
        append(_frame_head(METHOD, channel, len(method)))
        append(method)
        append(FRAME_END)
        append(_frame_head(HEADER, channel, len(header)))
        append(header)
        append(FRAME_END)
        for start in range(0, len(body), max_body_frame):
            chunk = body[start : start + max_body_frame]
            append(_frame_head(BODY, channel, len(chunk)))
            append(chunk)
            append(FRAME_END)
    return b"".join(parts)
