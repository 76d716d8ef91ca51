from __future__ import annotations

from common.settings import BaseAppSettings


class MobilitySettings(BaseAppSettings):
    port: int = 8002
