from __future__ import annotations

from common.settings import BaseAppSettings


class ActivitiesSettings(BaseAppSettings):
    port: int = 8003
