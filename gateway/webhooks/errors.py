"""The webhook endpoints' errors (rendered as problem+json by `common.errors`)."""

from __future__ import annotations

from common.errors import FieldError, Forbidden, NotFound, Unprocessable


class WebhookNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No such webhook.")


class DeliveryNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No such delivery.")


class WebhookForbidden(Forbidden):
    pass


class WebhookUrlRefused(Unprocessable):
    title, slug = "Webhook URL refused", "webhook-url-refused"

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"The webhook URL is refused: {reason}.",
            errors=[FieldError(field="url", message=reason)],
        )


class ReplayTooLarge(Unprocessable):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"More than {limit} events match since then: pick a later `since`.",
            errors=[FieldError(field="since", message="too many events to replay at once")],
        )
