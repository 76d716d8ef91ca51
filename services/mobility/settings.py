from __future__ import annotations

from common.settings import BaseAppSettings


class MobilitySettings(BaseAppSettings):
    port: int = 8002
    # The registry, called with service credentials to find and register persons (sync).
    registry_url: str = "http://127.0.0.1:8001"
    # No contact for this many days turns a mobile member `lost_contact`.
    lost_contact_days: int = 180
    # How often `mobile.lost_contact` is published for newly silent cards.
    lost_contact_sweep_s: float = 3600.0
    # A dual-management link still pending after this many days is an alert.
    unreported_days: int = 30
    # No organizational life attended for this many months is an alert.
    org_life_months: int = 6
    # How many persons one call to the registry carries during a sync.
    sync_chunk: int = 5_000
