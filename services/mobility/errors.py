"""The mobility service's errors; each maps to one HTTP meaning through common.errors."""

from __future__ import annotations

from common.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable


class CardNotFound(NotFound):
    title = "Mobile member's card not found"


class LinkNotFound(NotFound):
    title = "Dual-management link not found"


class OrgNotFound(NotFound):
    title = "Organization not found"


class CardNotActive(Conflict):
    title = "The card is closed"


class CardAlreadyOpen(Conflict):
    title = "The member already has an open card"


class LinkAlreadyOpen(Conflict):
    title = "The member already has an open link with this workplace"


class LinkStateConflict(Conflict):
    title = "The link is not in a state that allows this"


class InvalidCard(Unprocessable):
    pass


class InvalidLink(Unprocessable):
    pass


class RegistryUnavailable(ServiceUnavailable):
    title = "The registry could not be reached"
