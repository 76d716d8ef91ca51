from __future__ import annotations

from common.settings import BaseAppSettings


class GatewaySettings(BaseAppSettings):
    port: int = 8000
    registry_url: str = "http://127.0.0.1:8001"
    mobility_url: str = "http://127.0.0.1:8002"
    activities_url: str = "http://127.0.0.1:8003"
    upstream_timeout_s: float = 10.0

    def upstreams(self) -> dict[str, str]:
        return {
            "registry": self.registry_url,
            "mobility": self.mobility_url,
            "activities": self.activities_url,
        }
