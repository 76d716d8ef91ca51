"""The registry's errors; each maps to one HTTP meaning through common.errors."""

from __future__ import annotations

from common.errors import Conflict, NotFound, Unprocessable


class OrgNotFound(NotFound):
    title = "Organization not found"


class MemberNotFound(NotFound):
    title = "Member not found"


class TransferNotFound(NotFound):
    title = "Transfer not found"


class OrgCodeTaken(Conflict):
    title = "Organization code already used"


class OrgMoveNotAllowed(Conflict):
    title = "Organization cannot be moved there"


class PersonAlreadyRegistered(Conflict):
    title = "Person already registered"
    slug = "duplicate-person"


class MergeNotAllowed(Conflict):
    title = "Records cannot be merged"


class TransferNotAllowed(Conflict):
    title = "Transfer not allowed"
    slug = "transfer-state"


class InvalidReference(Unprocessable):
    title = "Invalid reference"
