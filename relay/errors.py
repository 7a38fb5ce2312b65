"""Relay errors, each mapped once (in relay.app) to the caller's protocol error body.

RelayError                 root: status, error type and code of the error envelope
├── AuthenticationFailed   401 missing or unknown relay key
├── PermissionDenied       403 the key may not use this model or feature
├── BudgetExceeded         429 a hard budget of the tenant is used up for this period
├── InvalidRequest         400 malformed JSON or fields of the wrong type
├── BodyTooLarge           413 request body over the configured limit
├── ModelNotFound          404 model not in the catalog
└── UpstreamFailed         502/503/504 no target answered (all failed, or all circuits open)

Each maps to the caller's protocol: the OpenAI envelope {"error": {message, type, param, code}}
or, on /v1/messages, the Anthropic one {"type": "error", "error": {type, message}}.
"""

from __future__ import annotations

from typing import Any

ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class RelayError(Exception):
    status = 500
    error_type = "api_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = {}

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def anthropic_body(self) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {
                "type": ANTHROPIC_TYPES.get(self.status, "api_error"),
                "message": self.message,
            },
        }


class AuthenticationFailed(RelayError):
    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(RelayError):
    status = 403
    error_type = "invalid_request_error"
    code = "model_not_allowed"


class BudgetExceeded(RelayError):
    status = 429
    error_type = "insufficient_quota"
    code = "budget_exceeded"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        # SDKs must not retry into a closed budget; Retry-After says when the period resets.
        self.headers = {"retry-after": str(max(1, retry_after_s)), "x-should-retry": "false"}


class InvalidRequest(RelayError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class BodyTooLarge(RelayError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class ModelNotFound(RelayError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class UpstreamFailed(RelayError):
    status = 502
    error_type = "api_error"
    code = "upstream_unavailable"

    def __init__(self, message: str, *, timeout: bool = False, unavailable: bool = False) -> None:
        super().__init__(message)
        if timeout:
            self.status = 504
            self.code = "upstream_timeout"
        elif unavailable:
            self.status = 503
            self.code = "upstreams_unavailable"
