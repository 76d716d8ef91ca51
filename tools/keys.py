"""Development key material under .data/keys: the gateway's token-signing pair and the
services' own pair (service-to-service calls)."""

from __future__ import annotations

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


def main() -> None:
    """`python -m tools.keys <dir>`: both Ed25519 pairs in <dir> (e.g. deploy/secrets for the
    compose file), kept if they already exist."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tools.keys")
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    for name in ("jwt", "service"):
        for path in ensure_signing_keys(args.directory, name=name):
            print(path)


if __name__ == "__main__":
    main()
