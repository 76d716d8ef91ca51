from __future__ import annotations

from pydantic import Field

from common.settings import BaseAppSettings


class RegistrySettings(BaseAppSettings):
    port: int = 8001
    # Default validity of a transfer letter when the issuer gives none.
    letter_validity_days: int = 90
    # How often overdue transfer letters are stored as `expired` (once across replicas).
    transfer_expiry_sweep_s: float = 3600.0
    import_max_rows: int = 200_000
    # The hot reads' own asyncpg pool (`service.member_read.HotReads`).
    hot_reads_pool_size: int = Field(default=10, ge=1)
