"""Relay errors, each mapped once (in relay.app) to the caller's protocol error body.

RelayError                 root: status, error type and code of the OpenAI error envelope
├── AuthenticationFailed   401 missing or unknown relay key
├── InvalidRequest         400 malformed JSON or fields of the wrong type
├── BodyTooLarge           413 request body over the configured limit
├── ModelNotFound          404 model not in the catalog
└── UpstreamFailed         502/504 every target failed with no answer to pass through
"""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    status = 500
    error_type = "api_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class AuthenticationFailed(RelayError):
    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


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

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        if timeout:
            self.status = 504
            self.code = "upstream_timeout"
