"""Development key material under .data/keys: the gateway's token-signing pair and the
services' own pair (service-to-service calls); for a deployment (`python -m tools.keys
deploy/secrets`) also the data keys, the lookup key and the first admin's password, as the
secret files docker-compose.yml mounts."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def ensure_signing_keys(directory: Path, *, name: str = "jwt") -> tuple[Path, Path]:
    """`<name>_private.pem` and `<name>_public.pem` (Ed25519), made once."""
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / f"{name}_private.pem", directory / f"{name}_public.pem"
    if not private.exists() or not public.exists():
        key = Ed25519PrivateKey.generate()
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        private.chmod(0o600)
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
    return private, public


def ensure_secret_files(directory: Path) -> list[Path]:
    """`data_keys` (one new AES-256 key, id `k1`), `lookup_key` (32 random bytes),
    `admin_password`, `security_admin_password` and each app's database role password
    (`db_<app>_password`), base64/text without a newline, made once (0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    makers: dict[str, Callable[[], str]] = {
        "data_keys": lambda: "k1:" + base64.b64encode(os.urandom(32)).decode(),
        "lookup_key": lambda: base64.b64encode(os.urandom(32)).decode(),
        "admin_password": lambda: secrets.token_urlsafe(18),
        "security_admin_password": lambda: secrets.token_urlsafe(18),
        # Each app's own database role (tools/db_roles.py; the migrate job sets them).
        **{
            f"db_{app}_password": lambda: secrets.token_urlsafe(24)
            for app in ("registry", "mobility", "activities", "gateway")
        },
    }
    paths = []
    for name, make in makers.items():
        path = directory / name
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(make())
        paths.append(path)
    return paths


def main() -> None:
    """`python -m tools.keys <dir>`: both Ed25519 pairs and the secret files in <dir> (e.g.
    deploy/secrets for the compose file), each kept if it already exists."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tools.keys")
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    for name in ("jwt", "service"):
        for path in ensure_signing_keys(args.directory, name=name):
            print(path)
    for path in ensure_secret_files(args.directory):
        print(path)


if __name__ == "__main__":
    main()
