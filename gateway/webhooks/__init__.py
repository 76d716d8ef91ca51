"""Webhooks: integrators and orgs register an endpoint; every event of their org's subtree
is delivered to it, signed per Standard Webhooks, retried with backoff and replayable."""
