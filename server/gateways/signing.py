"""The server's signing key for what it sends gateways (collectors/signed.py says why a
server key): an Ed25519 private key in a PEM file (``signing_key_path``), made on first use,
readable by its owner only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

__all__ = ["SigningKeyError", "load_or_create_signing_key"]


class SigningKeyError(Exception):
    """The key file cannot be used; the message names the file and why."""


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The key at ``path``; made (mode 0600) if there is none. Refused: a file others may
    read (whoever reads it can command every gateway), or one that is not an Ed25519 key."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        return key
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyError(
            f"{path}: the signing key is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"chmod 600 {path}"
        )
    try:
        loaded = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path}: not a PEM private key: {exc}") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 key")
    return loaded
