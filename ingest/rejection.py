"""Why a record was refused, in one line: what the warehouse quarantines and the streams
dead-letter with, so both name the same reason for the same bad record."""

from __future__ import annotations

from pydantic import ValidationError

from ingest.pricing import UsageInvariantError


def rejection(exc: Exception) -> str:
    if isinstance(exc, UsageInvariantError):
        return f"usage invariant: {exc}"
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]  # the field and what is wrong with it
        return f"{'.'.join(str(p) for p in first['loc']) or 'payload'}: {first['msg']}"
    return f"{type(exc).__name__}: {exc}"
