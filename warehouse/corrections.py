"""Re-pricing history when a price version is added: correction rows, never edits.

For every stored call the new version could apply to (same provider and model, inside its
effective range, its tenant if it has one), the call is priced again with the whole current book.
Where the result differs from the call's effective cost (original + earlier corrections), one
correction row records the delta and the new breakdown. Correction ids are derived from
(event_id, price_version_id), so applying a version twice changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb

from ingest.price_book import PriceVersion
from ingest.pricing import Cost, Pricer
from ingest.usage_event import TokenCounts
from warehouse.store import TOKEN_COLUMNS, money_json

_CANDIDATES = f"""
    SELECT event_id, event_time, tenant, provider, provider_model, service_tier,
           {", ".join(TOKEN_COLUMNS.values())},
           effective_cost_usd, effective_price_status, effective_price_version_id
    FROM call_costs
    WHERE provider = ? AND lower(provider_model) = lower(?)
      AND event_time >= ? AND (CAST(? AS TIMESTAMPTZ) IS NULL OR event_time < ?)
      AND (CAST(? AS VARCHAR) IS NULL OR tenant = ?)
      AND usage_error IS NULL
"""


def correction_id(event_id: str, price_version_id: str) -> str:
    return hashlib.sha256(f"{event_id}|{price_version_id}".encode()).hexdigest()[:32]


def corrections_for(
    cur: duckdb.DuckDBPyConnection, pricer: Pricer, version: PriceVersion, now: datetime
) -> list[dict[str, Any]]:
    result = cur.execute(
        _CANDIDATES,
        [
            version.provider,
            version.model,
            version.effective_from,
            version.effective_to,
            version.effective_to,
            version.tenant,
            version.tenant,
        ],
    )
    names = [d[0] for d in result.description]
    corrections = []
    for values in result.fetchall():
        row = dict(zip(names, values, strict=True))
        tokens = TokenCounts(**{name: row[col] for name, col in TOKEN_COLUMNS.items()})
        cost = pricer.price(
            row["provider"],
            row["provider_model"],
            tokens,
            row["event_time"],
            row["tenant"],
            row["service_tier"],
        )
        if not isinstance(cost, Cost):
            continue
        was_priced = row["effective_price_status"] == "priced"
        effective: Decimal = row["effective_cost_usd"] if was_priced else Decimal(0)
        if was_priced and cost.total_usd == effective:
            continue
        corrections.append(
            {
                "correction_id": correction_id(row["event_id"], cost.price_version_id),
                "event_id": row["event_id"],
                "price_version_id": cost.price_version_id,
                "previous_price_version_id": row["effective_price_version_id"],
                "delta_usd": str(cost.total_usd - effective),
                "cost_usd": str(cost.total_usd),
                "cost_by_class": money_json(cost.by_class_usd),
                "reason": f"price version {version.id} added",
                "created_at": now,
            }
        )
    return corrections


def version_row(version: PriceVersion, corrections: int, now: datetime) -> dict[str, Any]:
    return {
        "price_version_id": version.id,
        "provider": version.provider,
        "model": version.model,
        "currency": version.currency,
        "effective_from": version.effective_from,
        "effective_to": version.effective_to,
        "tenant": version.tenant,
        "service_tier": version.service_tier,
        "source": version.source,
        "definition": json.dumps(version.model_dump(mode="json")),
        "corrections": corrections,
        "applied_at": now,
    }
