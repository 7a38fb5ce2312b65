"""Pricing: one pure function from (usage event) to its cost, used by streams and warehouse.

Prices come from genai-prices' bundled, dated catalog, looked up at the event's own time, so a
replay prices history exactly as it was priced live. A model without a price is `unpriced`
(kept and counted), never a silent $0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache

import genai_prices
from genai_prices import Usage, data_snapshot
from genai_prices.types import ConditionalPrice, ModelInfo, ModelPrice, Provider

from ingest.usage_event import TokenCounts, UsageEvent

CATALOG_VERSION = f"genai-prices@{genai_prices.__version__}"


@dataclass(frozen=True)
class Cost:
    total_usd: Decimal
    input_usd: Decimal
    output_usd: Decimal
    price_version_id: str


@lru_cache(maxsize=4096)
def _find_model(provider: str, model: str) -> tuple[Provider, ModelInfo] | None:
    try:
        return data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
    except LookupError:
        return None


def _price_version_id(provider: Provider, model: ModelInfo, price: ModelPrice) -> str:
    tier = "base"
    if isinstance(model.prices, list):
        for index, conditional in enumerate(model.prices):
            if isinstance(conditional, ConditionalPrice) and conditional.prices is price:
                tier = f"c{index}"
    return f"{CATALOG_VERSION}:{provider.id}:{model.id}:{tier}"


def price_tokens(provider: str, model: str, tokens: TokenCounts, at: datetime) -> Cost | None:
    """The cost of `tokens` on `provider`/`model` at instant `at`; None when no price is known."""
    found = _find_model(provider, model)
    if found is None:
        return None
    provider_info, model_info = found
    usage = Usage(
        input_tokens=tokens.input_total,
        cache_read_tokens=tokens.cache_read,
        # genai-prices: cache_write_tokens is every write; the 1 h ones are also named apart.
        cache_write_tokens=tokens.cache_write + tokens.cache_write_1h,
        cache_write_1h_tokens=tokens.cache_write_1h,
        output_tokens=tokens.output_total,
    )
    calc = model_info.calc_price(usage, provider_info, genai_request_timestamp=at)
    return Cost(
        total_usd=calc.total_price,
        input_usd=calc.input_price,
        output_usd=calc.output_price,
        price_version_id=_price_version_id(provider_info, model_info, calc.model_price),
    )


def price_event(event: UsageEvent) -> UsageEvent:
    """Return the event with its pricing fields set (idempotent: a priced event is re-priced)."""
    cost = price_tokens(event.provider, event.provider_model, event.tokens, event.event_time)
    if cost is None:
        return event.model_copy(
            update={
                "price_status": "unpriced",
                "cost_usd": None,
                "input_cost_usd": None,
                "output_cost_usd": None,
                "price_version_id": None,
            }
        )
    return event.model_copy(
        update={
            "price_status": "priced",
            "cost_usd": cost.total_usd,
            "input_cost_usd": cost.input_usd,
            "output_cost_usd": cost.output_usd,
            "price_version_id": cost.price_version_id,
        }
    )
