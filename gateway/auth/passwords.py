"""Password hashing (argon2id) and the password policy."""

from __future__ import annotations

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import Type

from common.errors import FieldError

# A tiny list of the passwords people choose first; the policy refuses them outright.
COMMON_PASSWORDS = frozenset(
    {
        "password1234",
        "password123",
        "1234567890a",
        "a1234567890",
        "abc1234567",
        "abcd123456",
        "qwerty12345",
        "qwertyuiop1",
        "1qaz2wsx3edc",
        "iloveyou123",
        "admin123456",
        "administrator1",
        "welcome12345",
        "letmein12345",
        "passw0rd123",
        "p@ssw0rd123",
        "lianxin12345",
        "lianxin-admin1",
        "dangyuan1234",
        "zhongguo1234",
        "woaini123456",
        "a123456789",
        "aa123456789",
        "qq123456789",
        "abc123456789",
    }
)

MIN_LENGTH = 10
MAX_LENGTH = 256


class Hasher:
    """argon2id with tunable cost; hashing runs in a worker thread so logins do not stall
    the event loop."""

    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._ph = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        # Verified against when the username is unknown, so both paths cost the same.
        self._dummy = self._ph.hash("not a password: timing equaliser")

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._ph.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        target = stored_hash or self._dummy

        def check() -> bool:
            try:
                return bool(self._ph.verify(target, password))
            except (VerificationError, InvalidHashError):
                return False

        ok = await anyio.to_thread.run_sync(check)
        return ok and stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._ph.check_needs_rehash(stored_hash)


def policy_errors(password: str, *, username: str) -> list[FieldError]:
    """Why a password is refused (empty when acceptable): at least 10 characters, letters and
    digits at least, not the username, not one of the commonest choices."""
    problems: list[str] = []
    if len(password) < MIN_LENGTH:
        problems.append(f"must be at least {MIN_LENGTH} characters long")
    if len(password) > MAX_LENGTH:
        problems.append(f"must be at most {MAX_LENGTH} characters long")
    has_letter = any(c.isalpha() for c in password)
    has_digit = any(c.isdigit() for c in password)
    if not (has_letter and has_digit):
        problems.append("must mix letters and digits")
    lowered = password.lower()
    name = username.lower()
    if name and (lowered == name or (len(name) >= 4 and name in lowered)):
        problems.append("must not be or contain the username")
    if lowered in COMMON_PASSWORDS or len(set(password)) < 4:
        problems.append("is too common or too easy to guess")
    return [FieldError(field="password", message=p) for p in problems]
