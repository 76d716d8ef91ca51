"""Field encryption for sensitive values (ID numbers, phones, talk notes, whereabouts):
AES-256-GCM with a key ring for rotation, plus a keyed hash for exact-match lookups, so a
database dump holds neither the values nor anything that can be reversed without the keys."""

from __future__ import annotations

import base64
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_FORMAT = 1


class KeyRing:
    """`"id1:base64key,id2:base64key"`: the first key encrypts, every key decrypts."""

    def __init__(self, spec: str) -> None:
        keys: dict[str, AESGCM] = {}
        order: list[str] = []
        for entry in (e.strip() for e in spec.split(",") if e.strip()):
            key_id, _, b64 = entry.partition(":")
            raw = base64.b64decode(b64)
            if not key_id or len(key_id) > 32 or len(raw) != 32:
                raise ValueError("each data key must be '<id>:<base64 of 32 bytes>'")
            keys[key_id] = AESGCM(raw)
            order.append(key_id)
        if not order:
            raise ValueError("at least one data key is required")
        self._keys = keys
        self.current = order[0]
        kid = self.current.encode()
        # What every encryption with the current key shares (bulk writes encrypt 100,000
        # values): its AEAD and the blob's header.
        self._sealer = keys[self.current]
        self._header = bytes([_FORMAT, len(kid)]) + kid

    def encrypt(self, plaintext: str, *, purpose: str) -> bytes:
        nonce = os.urandom(12)
        sealed = self._sealer.encrypt(nonce, plaintext.encode(), purpose.encode())
        return self._header + nonce + sealed

    def decrypt(self, blob: bytes, *, purpose: str) -> str:
        if len(blob) < 2 or blob[0] != _FORMAT:
            raise ValueError("unknown ciphertext format")
        klen = blob[1]
        kid = blob[2 : 2 + klen].decode()
        nonce = blob[2 + klen : 14 + klen]
        try:
            key = self._keys[kid]
        except KeyError as exc:
            raise ValueError(f"data key {kid!r} is not configured") from exc
        try:
            return key.decrypt(nonce, blob[14 + klen :], purpose.encode()).decode()
        except InvalidTag as exc:
            raise ValueError("ciphertext does not verify") from exc

    def key_id_of(self, blob: bytes) -> str:
        return blob[2 : 2 + blob[1]].decode()


class Lookup:
    """Keyed hash (HMAC-SHA256) for unique indexes over encrypted values."""

    def __init__(self, b64key: str) -> None:
        self._key = base64.b64decode(b64key)
        if len(self._key) < 16:
            raise ValueError("the lookup key must be at least 16 bytes")

    def digest(self, value: str, *, purpose: str) -> bytes:
        # `hmac.digest`: the same HMAC in one C call (bulk imports hash 100,000 numbers).
        return hmac.digest(self._key, f"{purpose}\x00{value}".encode(), "sha256")
