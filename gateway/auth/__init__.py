"""Authentication at the gateway: logins, token issuance and rotation, users, API keys, and
the credentials check every proxied request goes through (`credentials.authorize_upstream`)."""
