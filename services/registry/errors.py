"""The registry's errors; each maps to one HTTP meaning through common.errors."""

from __future__ import annotations

from common.errors import Conflict, NotFound, PayloadTooLarge, Unprocessable


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


class InvalidMember(Unprocessable):
    title = "Invalid registration card"


class MemberOrgChangeNotAllowed(Conflict):
    title = "Organization changes through a transfer"
    slug = "use-transfer"


class OpenTransferExists(Conflict):
    title = "Member already has an open transfer"
    slug = "open-transfer"


class UnreadableImportFile(Unprocessable):
    title = "Unreadable import file"
    slug = "unreadable-file"


class ImportTooLarge(PayloadTooLarge):
    title = "Import file too large"


class ImportInProgress(Conflict):
    title = "Another import is running"
    slug = "import-in-progress"
