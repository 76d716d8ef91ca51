"""The auth endpoints' errors (rendered as problem+json by `common.errors`)."""

from __future__ import annotations

from common.errors import Conflict, Forbidden, NotFound, Unauthorized


class InvalidCredentials(Unauthorized):
    """Wrong username or password; deliberately the same for both."""

    def __init__(self) -> None:
        super().__init__("The username or password is wrong.", extra={"error": "invalid_grant"})


class AccountLocked(Unauthorized):
    title, slug = "Account locked", "account-locked"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "Too many failed logins: the account is locked for a while. Try again later.",
            headers={
                "WWW-Authenticate": 'Bearer realm="lianxin"',
                "Retry-After": str(max(retry_after_s, 1)),
            },
            extra={"error": "invalid_grant"},
        )


class AccountDisabled(Unauthorized):
    def __init__(self) -> None:
        super().__init__("The account is disabled.", extra={"error": "invalid_grant"})


class InvalidRefreshToken(Unauthorized):
    def __init__(self, detail: str = "The refresh token is not valid.") -> None:
        super().__init__(detail, extra={"error": "invalid_grant"})


class RefreshTokenReused(Unauthorized):
    title, slug = "Refresh token reused", "refresh-token-reused"

    def __init__(self) -> None:
        super().__init__(
            "This refresh token was already used: every session it belongs to is now "
            "signed out. Log in again.",
            extra={"error": "invalid_grant"},
        )


class InvalidApiKey(Unauthorized):
    def __init__(self, detail: str = "The API key is not valid.") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'ApiKey realm="lianxin"'})


class ApiKeyScopeDenied(Forbidden):
    pass


class UsernameTaken(Conflict):
    def __init__(self) -> None:
        super().__init__("This username is taken.")


class MemberHasLogin(Conflict):
    def __init__(self) -> None:
        super().__init__("This member already has a login.")


class OrgNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No such organization in your scope.")


class MemberNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No such member in your scope.")


class ApiKeyNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No such API key in your scope.")


class RoleNotGrantable(Forbidden):
    def __init__(self, role: str) -> None:
        super().__init__(f"Your role may not create {role} accounts.")
