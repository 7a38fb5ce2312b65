"""What a webhook receives for an alert: the body in the webhook's format, and signed headers.

- `slack`: a Slack incoming-webhook message, `{"text": ..., "blocks": [...]}` (header, the
  alert's message, fields, context), within Slack's block limits.
- `json`: the AlertEvent JSON exactly as it is on the alerts topic (money as decimal strings).

Headers on every request: `X-Tokenops-Alert-Id` (receivers dedupe on it: delivery is
at-least-once) and `X-Tokenops-Timestamp` (Unix seconds, fresh on each attempt). A webhook with a
secret also gets `X-Tokenops-Signature: sha256=<hex>`, the HMAC-SHA256 with the secret as key of
`<timestamp>.<body>` (the timestamp header's value, a dot, the raw body bytes). Receivers
recompute it, compare in constant time, and reject stale timestamps (e.g. older than 5 minutes)
so that a captured request cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC
from decimal import Decimal
from typing import Any

from ingest.alert_event import AlertEvent
from streams.webhooks import WebhookTarget

STATE_EMOJI = {"WARN": ":warning:", "BREACH": ":rotating_light:", "RECOVERED": ":white_check_mark:"}
USER_AGENT = "tokenops-alerts/1"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-Tokenops-Signature value for `body` sent at `timestamp`."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def body_for(target: WebhookTarget, alert: AlertEvent) -> bytes:
    if target.webhook.format == "slack":
        return json.dumps(slack_message(alert), ensure_ascii=False).encode()
    return alert.to_wire()


def headers_for(target: WebhookTarget, alert: AlertEvent, body: bytes, now: int) -> dict[str, str]:
    timestamp = str(now)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Tokenops-Alert-Id": alert.alert_id,
        "X-Tokenops-Timestamp": timestamp,
    }
    if target.secret is not None:
        headers["X-Tokenops-Signature"] = sign(target.secret, timestamp, body)
    return headers


def _escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _usd(amount: Decimal) -> str:
    """Dollars for people to read: cents from $1 up, up to six decimals below (exact values stay
    on the topic and in the warehouse)."""
    if abs(amount) >= 1:
        return f"${amount.quantize(Decimal('0.01')):,}"
    return f"${format(amount.quantize(Decimal('0.000001')).normalize(), 'f')}"


def scope_label(scope: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in scope.items()) or "organisation"


def slack_message(alert: AlertEvent) -> dict[str, Any]:
    emoji = STATE_EMOJI.get(alert.state, ":bell:")
    title = f"{emoji} {alert.state}: {alert.kind} alert for {alert.tenant}"
    fields = [
        ("Tenant", alert.tenant),
        ("Scope", scope_label(alert.scope)),
        ("Period", f"{alert.period} from {alert.period_start.astimezone(UTC):%Y-%m-%d %H:%M} UTC"),
    ]
    if alert.spend_usd is not None:
        spent = _usd(alert.spend_usd)
        fields.append(
            ("Spend", spent if alert.limit_usd is None else f"{spent} of {_usd(alert.limit_usd)}")
        )
    if alert.threshold is not None:
        fields.append(("Threshold", f"{alert.threshold:.0%}"))
    created = alert.created_at.astimezone(UTC)
    context = f"alert `{alert.alert_id}` at {created:%Y-%m-%d %H:%M:%S} UTC"
    if alert.budget_id is not None:
        context += f", budget `{_escape(alert.budget_id)}`"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _escape(alert.message)[:3000]}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n{_escape(value)}"[:2000]}
                for name, value in fields[:10]
            ],
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
    ]
    return {"text": _escape(f"{title}: {alert.message}")[:3000], "blocks": blocks}
