"""What registry routes declare: the session and the caller."""

from __future__ import annotations

from common.auth import PrincipalDep
from common.db import SessionDep

__all__ = ["PrincipalDep", "SessionDep"]
