"""The audit trail at the gateway: its own events (`events.record_event`) and the merged
view over every service's trail (`GET /api/v1/audit`, `GET /api/v1/auth/me/access-log`)."""
