"""Verified access tokens are remembered until their own expiry, never longer, in a bounded
cache; a token that fails is never remembered."""

from __future__ import annotations

import time

import pytest

from common.auth import Role, TokenVerifier
from common.errors import Unauthorized
from tests.helpers import PUBLIC_PEM, mint


def verifier(size: int = 16) -> TokenVerifier:
    return TokenVerifier(PUBLIC_PEM, issuer="lianxin-gateway", audience="lianxin", cache_size=size)


def test_a_verified_token_answers_the_same_principal_again() -> None:
    v = verifier()
    token = mint("org_admin", username="alice")
    first = v.verify(token)
    assert first.role is Role.org_admin and first.username == "alice"
    assert v.verify(token) == first


def test_a_remembered_token_stops_working_at_its_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    v = verifier()
    token = mint("admin", expires_in=60)
    v.verify(token)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    # Past `exp` the cache no longer answers: the token is checked again, and refused.
    monkeypatch.setattr("jwt.api_jwt.datetime", _LateDatetime, raising=False)
    with pytest.raises(Unauthorized):
        v.verify(token)


def test_a_refused_token_is_not_remembered() -> None:
    v = verifier()
    token = mint("admin")
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(Unauthorized):
            v.verify(tampered)
    assert v.verify(token).role is Role.admin


def test_the_cache_is_bounded() -> None:
    v = verifier(size=2)
    tokens = [mint("admin", sub=f"user-{i}") for i in range(5)]
    for token in tokens:
        v.verify(token)
    assert len(v._cache) == 2
    # The oldest were let go, and still verify (the slow way).
    assert v.verify(tokens[0]).subject == "user-0"


class _LateDatetime:
    """`datetime` as PyJWT reads the clock, an hour late."""

    @staticmethod
    def now(tz: object = None) -> object:
        from datetime import datetime, timedelta

        return datetime.now(tz) + timedelta(hours=1)  # type: ignore[arg-type]
