"""The relay's own encoding of a publish batch is byte for byte what pamqp encodes (the reference),
for any routing key, id, type, application id and body, a body longer than a frame included."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.frame import marshal
from pamqp.header import ContentHeader

from wallet.messaging.inprocess import OutgoingEvent
from wallet.messaging.publish_frames import publish_frames, shortstr

SHORT = st.text(min_size=0, max_size=60)


def pamqp_frames(
    events: list[OutgoingEvent], exchange: str, app_id: str, channel: int, largest: int
) -> bytes:
    out = b""
    for e in events:
        properties = spec.Basic.Properties(
            message_id=e.message_id,
            content_type="application/json",
            delivery_mode=2,
            message_type=e.message_type,
            app_id=app_id,
        )
        out += marshal(spec.Basic.Publish(exchange=exchange, routing_key=e.routing_key), channel)
        out += marshal(ContentHeader(properties=properties, body_size=len(e.body)), channel)
        for i in range(0, len(e.body), largest):
            out += marshal(ContentBody(e.body[i : i + largest]), channel)
    return out


@given(
    events=st.lists(
        st.builds(
            OutgoingEvent,
            st.from_regex(r"[a-z][a-z._]{0,40}", fullmatch=True),
            st.binary(min_size=1, max_size=300),
            st.from_regex(r"[0-9a-f-]{1,36}", fullmatch=True),
            st.from_regex(r"[A-Z_]{1,30}", fullmatch=True),
        ),
        max_size=8,
    ),
    exchange=st.from_regex(r"[a-z_.]{0,40}", fullmatch=True),
    app_id=st.from_regex(r"[a-z-]{1,20}", fullmatch=True),
    channel=st.integers(1, 2047),
    largest=st.integers(1, 400),
)
def test_the_batch_encodes_as_pamqp_does(
    events: list[OutgoingEvent], exchange: str, app_id: str, channel: int, largest: int
) -> None:
    ours = publish_frames(events, exchange=exchange, app_id=app_id, channel=channel, max_body_frame=largest)
    assert ours == pamqp_frames(events, exchange, app_id, channel, largest)


@given(SHORT)
def test_short_strings_as_pamqp_encodes_them(text: str) -> None:
    if len(text.encode()) <= 255:
        assert shortstr(text) == marshal(spec.Basic.Publish(routing_key=text), 1)[14:-2]


def test_a_short_string_over_255_bytes_is_refused() -> None:
    with pytest.raises(ValueError):
        shortstr("é" * 128)
