"""What activities routes declare: the session, the caller and the talk-notes cipher."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from common.auth import PrincipalDep
from common.crypto import KeyRing, Lookup
from common.db import SessionDep
from common.settings import BaseAppSettings

__all__ = ["NotesCipher", "NotesCipherDep", "PrincipalDep", "SessionDep"]

PURPOSE = "talk.notes"


@dataclass(frozen=True)
class NotesCipher:
    """Seals and opens heart-to-heart talk notes (AES-GCM, purpose `talk.notes`)."""

    keys: KeyRing
    lookup: Lookup

    @classmethod
    def from_settings(cls, settings: BaseAppSettings) -> NotesCipher:
        return cls(keys=KeyRing(settings.data_keys), lookup=Lookup(settings.lookup_key))

    def fingerprint(self, payload: Any) -> str:
        """A keyed hash of a request body holding notes (idempotency keys store it): a
        plain hash of short notes could be guessed."""
        canon = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return self.lookup.digest(canon, purpose="activities.idempotency").hex()

    def seal(self, notes: str) -> bytes:
        return self.keys.encrypt(notes, purpose=PURPOSE)

    def open(self, blob: bytes) -> str:
        return self.keys.decrypt(blob, purpose=PURPOSE)


async def get_notes_cipher(request: Request) -> NotesCipher:
    cipher: NotesCipher = request.app.state.notes_cipher
    return cipher


NotesCipherDep = Annotated[NotesCipher, Depends(get_notes_cipher)]
