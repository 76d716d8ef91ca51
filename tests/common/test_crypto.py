from __future__ import annotations

import base64
import os

import pytest

from common.crypto import KeyRing, Lookup


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class TestKeyRing:
    def test_round_trip_and_no_plaintext_in_ciphertext(self) -> None:
        ring = KeyRing(f"k1:{_key()}")
        blob = ring.encrypt("33040219700101123X", purpose="member.id_number")
        assert b"33040219700101123X" not in blob
        assert ring.decrypt(blob, purpose="member.id_number") == "33040219700101123X"

    def test_same_value_encrypts_differently(self) -> None:
        ring = KeyRing(f"k1:{_key()}")
        assert ring.encrypt("x", purpose="p") != ring.encrypt("x", purpose="p")

    def test_purpose_binds_the_ciphertext(self) -> None:
        ring = KeyRing(f"k1:{_key()}")
        blob = ring.encrypt("secret", purpose="talk.notes")
        with pytest.raises(ValueError):
            ring.decrypt(blob, purpose="member.phone")

    def test_rotation_keeps_old_records_readable(self) -> None:
        old_key, new_key = _key(), _key()
        old = KeyRing(f"old:{old_key}")
        blob = old.encrypt("13812345678", purpose="member.phone")
        rotated = KeyRing(f"new:{new_key},old:{old_key}")
        assert rotated.decrypt(blob, purpose="member.phone") == "13812345678"
        fresh = rotated.encrypt("13812345678", purpose="member.phone")
        assert rotated.key_id_of(fresh) == "new"
        with pytest.raises(ValueError):
            KeyRing(f"new:{new_key}").decrypt(blob, purpose="member.phone")

    def test_tampered_ciphertext_is_refused(self) -> None:
        ring = KeyRing(f"k1:{_key()}")
        blob = bytearray(ring.encrypt("secret", purpose="p"))
        blob[-1] ^= 1
        with pytest.raises(ValueError):
            ring.decrypt(bytes(blob), purpose="p")

    @pytest.mark.parametrize(
        "spec", ["", "k1:c2hvcnQ=", ":" + base64.b64encode(b"x" * 32).decode()]
    )
    def test_bad_key_specs_are_refused(self, spec: str) -> None:
        with pytest.raises(ValueError):
            KeyRing(spec)


class TestLookup:
    def test_deterministic_and_keyed(self) -> None:
        a, b = Lookup(_key()), Lookup(_key())
        assert a.digest("v", purpose="p") == a.digest("v", purpose="p")
        assert a.digest("v", purpose="p") != b.digest("v", purpose="p")
        assert a.digest("v", purpose="p") != a.digest("v", purpose="q")
