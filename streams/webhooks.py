"""Webhooks: where alerts go, from `webhooks.yaml` in the config directory.

Each webhook has a name, a URL (`url`, or `url_env` naming the environment variable that holds
it: a Slack incoming-webhook URL is a credential), a format (`slack` or `json`), an optional
`secret_env` naming the environment variable with its HMAC secret, and optional filters
(`kinds`, `tenants`, `states`; an unset filter lets everything through). URLs and secrets are
read from the environment once, at load, and never logged or recorded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ingest.alert_event import AlertEvent, AlertState
from tokenops.errors import ConfigError

AlertKind = Literal["budget", "anomaly", "unpriced"]
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _http_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL")
    return value


class Webhook(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str | None = None
    url_env: str | None = Field(None, pattern=ENV_NAME)
    format: Literal["slack", "json"]
    secret_env: str | None = Field(None, pattern=ENV_NAME)
    kinds: frozenset[AlertKind] | None = None
    tenants: frozenset[str] | None = None
    states: frozenset[AlertState] | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @model_validator(mode="after")
    def _one_url(self) -> Webhook:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("set exactly one of url and url_env")
        return self

    def matches(self, alert: AlertEvent) -> bool:
        return (
            (self.kinds is None or alert.kind in self.kinds)
            and (self.tenants is None or alert.tenant in self.tenants)
            and (self.states is None or alert.state in self.states)
        )


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook with its URL and secret resolved from the environment (kept out of repr)."""

    webhook: Webhook
    url: str = field(repr=False)
    secret: bytes | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.webhook.name


class _WebhooksFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhooks: list[Webhook] = []


def _one_line(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
    )


def _resolve(webhook: Webhook, environ: Mapping[str, str]) -> WebhookTarget:
    url = webhook.url
    if webhook.url_env is not None:
        url = environ.get(webhook.url_env)
        if not url:
            raise ValueError(f"url_env {webhook.url_env} is not set")
        try:
            _http_url(url)
        except ValueError:
            raise ValueError(f"url_env {webhook.url_env} is not an http(s) URL") from None
    secret = None
    if webhook.secret_env is not None:
        value = environ.get(webhook.secret_env)
        if not value:
            raise ValueError(f"secret_env {webhook.secret_env} is not set")
        secret = value.encode()
    assert url is not None
    return WebhookTarget(webhook, url, secret)


def load_webhooks(path: Path, environ: Mapping[str, str] | None = None) -> list[WebhookTarget]:
    """The webhooks of `path` (none when the file does not exist); ConfigError names the file
    and the problem on one line."""
    if not path.exists():
        return []
    try:
        parsed = _WebhooksFile.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as exc:
        raise ConfigError(f"invalid webhooks file {path}: {_one_line(exc)}") from None
    except (OSError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"invalid webhooks file {path}: {reason}") from None
    names = [w.name for w in parsed.webhooks]
    if len(names) != len(set(names)):
        raise ConfigError(f"invalid webhooks file {path}: two webhooks have the same name")
    environ = os.environ if environ is None else environ
    targets = []
    for webhook in parsed.webhooks:
        try:
            targets.append(_resolve(webhook, environ))
        except ValueError as exc:
            raise ConfigError(
                f"invalid webhooks file {path}: webhook {webhook.name!r}: {exc}"
            ) from None
    return targets
