"""Signed management messages: what the server sends a gateway (``config``, ``cmd``) carries
the server's Ed25519 signature, bound to the topic it is meant for, with an expiry and a
nonce, so that neither a client the broker let in nor a replay can command a gate.

Why the server's public key and not a key per gateway: the gateway then holds no secret that
could command anything (a stolen gateway yields nothing to forge with), one key pair serves
every gateway, and rotating it is adding the new public key to the sites before the server
switches (``uplink.server_keys`` takes several).

Wire form (JSON)::

    {"signed": 1, "key": "<key id>", "topic": "linli/v1/c/g/cmd", "exp": 1763800060000,
     "nonce": "<32 hex>", "body": "<the command or config, as a JSON string>",
     "sig": "<base64 of the Ed25519 signature>"}

The signature covers ``linli-signed-v1``, the topic, the expiry (empty for none), the nonce
and the body, one per line. ``key`` is the first 16 hex digits of the SHA-256 of the raw
public key, so a gateway that knows several keys knows which to try.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "SignatureError",
    "Verified",
    "key_id",
    "public_key_from_text",
    "public_key_text",
    "sign",
    "verify",
]

VERSION: Final = 1
_DOMAIN: Final = b"linli-signed-v1"


class SignatureError(ValueError):
    """A management message that must not be acted on; the message says why."""


class _Signed(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    signed: int
    key: str
    topic: str
    nonce: str
    body: str
    sig: str
    exp: int | None = None


@dataclass(frozen=True, slots=True)
class Verified:
    """A message whose signature checked out."""

    body: bytes
    expires: int | None
    nonce: str


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """The short id a signed message names its key by."""
    return hashlib.sha256(_raw(key)).hexdigest()[:16]


def public_key_text(key: Ed25519PublicKey) -> str:
    """The public key as site configs write it (base64 of the 32 raw bytes)."""
    return base64.b64encode(_raw(key)).decode()


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """A key written by :func:`public_key_text`; ``ValueError`` naming what is wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{text[:60]!r} is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def _message(topic: str, expires: int | None, nonce: str, body: str) -> bytes:
    exp = "" if expires is None else str(expires)
    return b"\n".join([_DOMAIN, topic.encode(), exp.encode(), nonce.encode(), body.encode()])


def sign(key: Ed25519PrivateKey, topic: str, body: bytes, *, expires: int | None) -> bytes:
    """``body`` (UTF-8 JSON) wrapped and signed for ``topic``."""
    text = body.decode()
    nonce = secrets.token_hex(16)
    sig = key.sign(_message(topic, expires, nonce, text))
    wrapped = _Signed(VERSION, key_id(key.public_key()), topic, nonce, text,
                      base64.b64encode(sig).decode(), expires)  # fmt: skip
    return msgspec.json.encode(wrapped)


def verify(
    payload: bytes, topic: str, keys: Sequence[Ed25519PublicKey], *, now: int, skew_ms: int
) -> Verified:
    """The body of a signed message for ``topic``, or :class:`SignatureError`.

    Refused: not a signed message; for another topic (another gateway, or config for cmd);
    a key not among ``keys``; a bad signature; an expiry more than ``skew_ms`` before ``now``.
    """
    if not keys:
        raise SignatureError("no server key is configured (uplink.server_keys)")
    try:
        msg = msgspec.json.decode(payload, type=_Signed)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SignatureError(f"not a signed message: {exc}") from None
    if msg.signed != VERSION:
        raise SignatureError(f"signed version {msg.signed} is not {VERSION}")
    if msg.topic != topic:
        raise SignatureError(f"signed for {msg.topic!r}, not for {topic!r}")
    key = next((k for k in keys if key_id(k) == msg.key), None)
    if key is None:
        raise SignatureError(f"signed with key {msg.key!r}, which this gateway does not know")
    try:
        sig = base64.b64decode(msg.sig, validate=True)
        key.verify(sig, _message(msg.topic, msg.exp, msg.nonce, msg.body))
    except (binascii.Error, ValueError, InvalidSignature):
        raise SignatureError("the signature does not verify") from None
    if msg.exp is not None and msg.exp + skew_ms < now:
        raise SignatureError(f"expired {now - msg.exp} ms ago")
    return Verified(msg.body.encode(), msg.exp, msg.nonce)
