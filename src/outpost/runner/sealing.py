"""The job token's seal in a build's outbox (docs/protocol.md: what it protects, and why that key).

Built from the standard library alone, so a runner does not load `cryptography` (~8 MiB of resident memory,
most of an idle runner's margin) for one short token a build. The construction is the textbook one:

- keys: HKDF-SHA256 (RFC 5869) of the runner token, salted with the lease id, expanded to an encryption key and
  a separate MAC key;
- encryption: HMAC-SHA256 as a pseudo-random function in counter mode over a random 16-byte nonce, XORed with
  the token;
- integrity: encrypt-then-MAC, HMAC-SHA256 over the version, the nonce and the ciphertext, checked in constant
  time before anything is decrypted.

A sealed token reads `s1.<urlsafe base64 of nonce | ciphertext | tag>`. Leases written by a runner of before
(Fernet tokens) are still opened, with `cryptography` loaded only then.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

VERSION = b"s1."
_INFO = b"outpost job token at rest"
_NONCE = 16
_TAG = 32
_BLOCK = hashlib.sha256().digest_size


class Unsealable(ValueError):
    """The sealed text was altered, is not a seal, or was sealed under another runner token or lease."""


def _keys(runner_token: str, lease_id: str) -> tuple[bytes, bytes]:
    """HKDF-SHA256 (extract, then expand to two blocks): the encryption key and the MAC key."""
    prk = hmac.digest(lease_id.encode(), runner_token.encode(), "sha256")
    first = hmac.digest(prk, _INFO + b"\x01", "sha256")
    second = hmac.digest(prk, first + _INFO + b"\x02", "sha256")
    return first, second


def _keystream(key: bytes, nonce: bytes, size: int) -> bytes:
    blocks = (size + _BLOCK - 1) // _BLOCK
    return b"".join(hmac.digest(key, nonce + n.to_bytes(4, "big"), "sha256") for n in range(blocks))[:size]


def _xor(data: bytes, stream: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


def seal(secret: str, runner_token: str, lease_id: str) -> str:
    enc_key, mac_key = _keys(runner_token, lease_id)
    nonce = os.urandom(_NONCE)
    plain = secret.encode()
    cipher = _xor(plain, _keystream(enc_key, nonce, len(plain)))
    tag = hmac.digest(mac_key, VERSION + nonce + cipher, "sha256")
    return (VERSION + base64.urlsafe_b64encode(nonce + cipher + tag)).decode()


def unseal(sealed: str, runner_token: str, lease_id: str) -> str:
    """The secret `seal` was given. Unsealable when the text was altered or sealed under another key."""
    if not sealed.startswith(VERSION.decode()):
        return _unseal_fernet(sealed, runner_token, lease_id)
    try:
        raw = base64.urlsafe_b64decode(sealed[len(VERSION) :].encode())
    except ValueError as exc:
        raise Unsealable("the seal is not base64") from exc
    if len(raw) < _NONCE + _TAG:
        raise Unsealable("the seal is too short")
    nonce, cipher, tag = raw[:_NONCE], raw[_NONCE:-_TAG], raw[-_TAG:]
    enc_key, mac_key = _keys(runner_token, lease_id)
    if not hmac.compare_digest(tag, hmac.digest(mac_key, VERSION + nonce + cipher, "sha256")):
        raise Unsealable("the seal does not open with this runner token (altered, or another registration)")
    try:
        return _xor(cipher, _keystream(enc_key, nonce, len(cipher))).decode()
    except UnicodeDecodeError as exc:  # pragma: no cover - the tag held, so only a sealer's bug gets here
        raise Unsealable("the sealed token is not text") from exc


def _unseal_fernet(sealed: str, runner_token: str, lease_id: str) -> str:
    """A lease sealed by a runner of before this module (Fernet, same HKDF inputs): an upgrade mid-build."""
    from cryptography.fernet import Fernet, InvalidToken
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=lease_id.encode(), info=_INFO)
    try:
        fernet = Fernet(base64.urlsafe_b64encode(key.derive(runner_token.encode())))
        return fernet.decrypt(sealed.encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise Unsealable("the seal does not open with this runner token (altered, or another registration)") from exc
