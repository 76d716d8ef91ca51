"""What registry routes declare: the session, the caller and the field-encryption keys."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from common.auth import PrincipalDep
from common.crypto import KeyRing, Lookup
from common.db import SessionDep
from common.settings import BaseAppSettings

__all__ = ["CryptoDep", "FieldCrypto", "PrincipalDep", "SessionDep"]

_SEALED = "registry.sealed_response"


@dataclass(frozen=True)
class FieldCrypto:
    """The data key ring (encrypts ID numbers and phones) and the keyed hash (finds an ID
    number without decrypting), built once per app from the settings."""

    keys: KeyRing
    lookup: Lookup

    @classmethod
    def from_settings(cls, settings: BaseAppSettings) -> FieldCrypto:
        return cls(keys=KeyRing(settings.data_keys), lookup=Lookup(settings.lookup_key))

    def fingerprint(self, payload: Any) -> str:
        """A keyed hash of a request body, for idempotency keys: a plain hash of a body
        holding an ID number could be brute-forced."""
        canon = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return self.lookup.digest(canon, purpose="registry.idempotency").hex()

    def seal(self, body: Any) -> dict[str, str]:
        """A response body encrypted for storage (idempotent replays of bodies with phones)."""
        blob = self.keys.encrypt(json.dumps(body, separators=(",", ":")), purpose=_SEALED)
        return {"sealed": base64.b64encode(blob).decode()}

    def unseal(self, stored: Any) -> Any:
        blob = base64.b64decode(stored["sealed"])
        return json.loads(self.keys.decrypt(blob, purpose=_SEALED))


async def get_crypto(request: Request) -> FieldCrypto:
    crypto: FieldCrypto = request.app.state.crypto
    return crypto


CryptoDep = Annotated[FieldCrypto, Depends(get_crypto)]
