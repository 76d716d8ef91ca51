"""What mobility routes declare: the session, the caller, the field encryption and the
settings (durations of the rules, the registry's address)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from common.auth import PrincipalDep
from common.crypto import KeyRing, Lookup
from common.db import SessionDep
from services.mobility.settings import MobilitySettings

__all__ = ["CryptoDep", "FieldCrypto", "PrincipalDep", "SessionDep", "SettingsDep"]

PLACE = "mobility.place"
PHONE = "mobility.contact_phone"
NOTES = "mobility.contact_notes"


@dataclass(frozen=True)
class FieldCrypto:
    keys: KeyRing
    lookup: Lookup

    @classmethod
    def from_settings(cls, settings: MobilitySettings) -> FieldCrypto:
        return cls(keys=KeyRing(settings.data_keys), lookup=Lookup(settings.lookup_key))

    def seal(self, value: str | None, *, purpose: str) -> bytes | None:
        return None if value is None else self.keys.encrypt(value, purpose=purpose)

    def open(self, blob: bytes | None, *, purpose: str) -> str | None:
        return None if blob is None else self.keys.decrypt(blob, purpose=purpose)


async def get_crypto(request: Request) -> FieldCrypto:
    crypto: FieldCrypto = request.app.state.crypto
    return crypto


async def get_settings(request: Request) -> MobilitySettings:
    settings: MobilitySettings = request.app.state.settings
    return settings


CryptoDep = Annotated[FieldCrypto, Depends(get_crypto)]
SettingsDep = Annotated[MobilitySettings, Depends(get_settings)]
