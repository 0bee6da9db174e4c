"""The wire contract: round trips, property tests, and every kind of bad payload."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collectors.wire import (
    MAX_PAYLOAD_BYTES,
    Command,
    Envelope,
    Event,
    GatewayStatus,
    Reading,
    WireError,
    decode_ack,
    decode_command,
    decode_envelope,
    decode_status,
    encode_command,
    encode_envelope,
    encode_status,
    parse_topic,
    topic_for,
)

T0 = 1_763_800_000_000
ids = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
times = st.integers(min_value=T0, max_value=T0 + 10**10)

elevator_fields = st.fixed_dictionaries(
    {},
    optional={
        "running": st.booleans(),
        "direction": st.sampled_from(["none", "up", "down"]),
        "floor": st.integers(-5, 120),
        "door": st.sampled_from(["closed", "open", "opening", "closing"]),
        "occupied": st.booleans(),
        "trips": st.integers(0, 10**9),
        "run_hours": st.floats(0, 1e6, allow_nan=False),
    },
)
readings = st.builds(Reading, t=times, dev=ids, kind=st.just("elevator"), fields=elevator_fields)
events = st.builds(
    Event,
    t=times,
    dev=ids,
    kind=st.just("gate"),
    event=st.sampled_from(["forced_open", "held_open", "remote_open"]),
    state=st.sampled_from(["start", "end", "instant"]),
    data=st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
envelopes = st.builds(
    Envelope,
    gw=ids,
    community=ids,
    seq=st.integers(0, 2**53),
    sent=times,
    items=st.lists(st.one_of(readings, events), max_size=20),
)


@given(envelopes)
def test_decode_of_encode_is_identity(env: Envelope) -> None:
    assert decode_envelope(encode_envelope(env)) == env


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_wire_error(data: bytes) -> None:
    problem = None
    try:
        decode_envelope(data)
    except WireError as exc:
        problem = exc.problem
    assert problem in {None, "malformed", "schema"}


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_raises_only_wire_error(value: object) -> None:
    problem = None
    try:
        decode_envelope(json.dumps(value).encode())
    except WireError as exc:
        problem = exc.problem
    assert problem == "schema"  # no JSON value but an envelope passes


def good() -> dict[str, object]:
    return {
        "v": 1,
        "gw": "gw-1",
        "community": "c-001",
        "seq": 41,
        "sent": T0,
        "items": [
            {"t": T0, "dev": "el-3", "kind": "elevator", "fields": {"floor": 7, "door": "open"}},
            {
                "t": T0,
                "dev": "el-3",
                "kind": "elevator",
                "event": "trapped",
                "state": "start",
                "data": {"floor": 7},
            },
        ],
    }


def test_the_design_example_decodes_to_typed_items() -> None:
    env = decode_envelope(json.dumps(good()).encode())
    assert env.seq == 41
    assert env.items == [
        Reading(T0, "el-3", "elevator", {"floor": 7, "door": "open"}),
        Event(T0, "el-3", "elevator", "trapped", "start", {"floor": 7}),
    ]


@pytest.mark.parametrize(
    ("mutate", "problem", "message"),
    [
        (lambda d: d.update(v=2), "schema", "unsupported protocol version"),
        (lambda d: d.update(seq=-1), "schema", "seq=-1"),
        (lambda d: d.update(gw="GW 1"), "schema", "not a slug"),
        (lambda d: d.pop("community"), "schema", "missing required field `community`"),
        (lambda d: d.update(extra=1), "schema", "unknown field `extra`"),
        (lambda d: d["items"][0]["fields"].update(floor="7"), "schema", "$.floor"),
        (lambda d: d["items"][0]["fields"].update(speed=2), "schema", "unknown field `speed`"),
        (lambda d: d["items"][0].update(t=17), "schema", "t=17"),
        (lambda d: d["items"][0].update(kind="lift"), "schema", "$.items[0].kind"),
        (lambda d: d["items"][1].update(event="dance"), "schema", "unknown elevator event"),
        (lambda d: d["items"][1].pop("state"), "schema", "needs 'state'"),
        (lambda d: d["items"][1].update(fields={}), "schema", "not both"),
        (lambda d: d["items"][0].pop("fields"), "schema", "needs 'fields'"),
    ],
)
def test_bad_envelopes_name_what_and_where(mutate, problem, message) -> None:  # type: ignore[no-untyped-def]
    data = good()
    mutate(data)
    with pytest.raises(WireError) as info:
        decode_envelope(json.dumps(data).encode())
    assert info.value.problem == problem
    assert message in str(info.value)


def test_oversized_and_non_json_payloads() -> None:
    with pytest.raises(WireError) as info:
        decode_envelope(b" " * (MAX_PAYLOAD_BYTES + 1))
    assert info.value.problem == "too_large"
    for payload in (b"{", b"\xff\xfe", b""):
        with pytest.raises(WireError) as info:
            decode_envelope(payload)
        assert info.value.problem == "malformed"


def test_topics_round_trip_and_reject_strangers() -> None:
    topic = topic_for("linli/v1", "c-001", "gw-1", "up")
    assert topic == "linli/v1/c-001/gw-1/up"
    addr = parse_topic("linli/v1", topic)
    assert (addr.community, addr.gateway, addr.channel) == ("c-001", "gw-1", "up")
    assert parse_topic("linli/v1", "linli/v1/c/g/cmd/ack").channel == "cmd/ack"
    for bad in ("other/c/g/up", "linli/v1/c/up", "linli/v1/c/g/down", "linli/v1/C!/g/up"):
        with pytest.raises(WireError) as info:
            parse_topic("linli/v1", bad)
        assert info.value.problem == "topic"


def test_status_round_trip_and_bad_status() -> None:
    status = GatewayStatus("offline", "gw-1", "c-001", T0)
    assert decode_status(encode_status(status)) == status
    with pytest.raises(WireError, match="status"):
        decode_status(b'{"status": "sleeping", "gw": "gw-1", "community": "c"}')


def test_a_gateway_health_item_with_per_device_poll_shares() -> None:
    health = {"t": 1_795_300_000_000, "dev": "gw-1", "kind": "gateway",
              "fields": {"queue_depth": 12, "thinned": 0, "software": "linli 0.1.0",
                         "poll_ok.el-1-1": 1.0, "poll_ok.fl-1": 0.5}}  # fmt: skip
    body = good()
    body["items"] = [health]
    env = decode_envelope(json.dumps(body).encode())
    [item] = env.items
    assert isinstance(item, Reading)
    assert item.fields["poll_ok.fl-1"] == 0.5


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"poll_ok.el-1-1": 1.5}, "expected a share between 0 and 1, got 1.5"),
        ({"poll_ok.EL 1": 1.0}, "the device id is not a slug"),
        ({"poll_ok.el-1-1": True}, "expected a share between 0 and 1"),
        ({"queue_depth": "many"}, "Expected `int | null`, got `str`"),
    ],
)
def test_bad_health_fields_name_the_field(fields: dict[str, object], message: str) -> None:
    body = good()
    body["items"] = [{"t": 1_795_300_000_000, "dev": "gw-1", "kind": "gateway", "fields": fields}]
    with pytest.raises(WireError, match="items") as info:
        decode_envelope(json.dumps(body).encode())
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("payload", "problem", "words"),
    [
        (b'{"ok": true', "malformed", "not JSON"),
        (b'{"ok": "yes", "t": 1}', "schema", "$.ok"),
        (b'{"ok": true}', "schema", "missing required field `t`"),
        (b'{"ok": true, "t": 1}', "schema", "a command acknowledgement needs an id"),
        (b'{"ok": true, "t": 1, "type": "reboot"}', "schema", "$.type"),
    ],
)
def test_bad_acks_are_named(payload: bytes, problem: str, words: str) -> None:
    with pytest.raises(WireError, match=re.escape(words)) as err:
        decode_ack(payload)
    assert err.value.problem == problem


def test_acks_and_commands_round_trip() -> None:
    ack = decode_ack(b'{"type": "config", "ok": false, "version": 5, "running": 3, "t": 9,'
                     b' "error": "config:1: no"}')  # fmt: skip
    assert (ack.type, ack.ok, ack.version, ack.running, ack.error) == ("config", False, 5, 3,
                                                                       "config:1: no")  # fmt: skip
    cmd = Command(id="c-1", op="unlock", device="gt-north", expires=10, sent=5)
    assert decode_command(encode_command(cmd)) == cmd
    with pytest.raises(WireError, match=re.escape("Invalid enum value 'explode' - at `$.op`")):
        decode_command(b'{"id": "c-2", "op": "explode"}')
