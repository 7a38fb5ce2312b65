"""The anomaly detector on simulated multi-tenant traffic: quiet on a steady baseline, one
explained page per injected anomaly, a RECOVERED when it ends, nothing for tiny tenants."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from ingest.alert_event import AlertEvent
from ingest.usage_event import TokenCounts, UsageEvent
from streams.anomaly import AnomalyConfig, AnomalyDetector
from tests.support import usage_event

START = datetime(2025, 6, 1, 12, tzinfo=UTC)
CONFIG = AnomalyConfig(
    bucket_s=5,
    window_s=10,
    baseline_buckets=48,
    min_baseline_buckets=12,
    min_requests=10,
    recover_after_s=15,
)
WARM_UP_S = 240

RATES = {  # USD per million tokens
    "gpt-4o-mini": {"input_uncached": "0.15", "cache_read": "0.075", "output": "0.60"},
    "gpt-4o": {"input_uncached": "2.50", "cache_read": "1.25", "output": "10"},
    "claude-3-5-haiku": {"input_uncached": "0.80", "cache_read": "0.08", "output": "4"},
}


@dataclass(frozen=True)
class Stream:
    """One tenant/feature/prompt version calling at a steady, noisy rate."""

    tenant: str
    feature: str | None = None
    prompt_version: str | None = None
    rate: float = 2.0
    """Calls per second."""
    input_tokens: int = 2000
    output_tokens: int = 200
    cache_hit: float = 0.0
    models: tuple[tuple[str, float], ...] = (("gpt-4o-mini", 1.0),)
    error_share: float = 0.005
    fallback_share: float = 0.0
    aliases: tuple[tuple[str, str], ...] = ()
    """(requested, served): catalog aliases the relay serves by their first target."""


def priced_call(stream: Stream, at: datetime, rng: random.Random) -> UsageEvent:
    requested = rng.choices([m for m, _ in stream.models], [w for _, w in stream.models])[0]
    attribution: dict[str, Any] = {
        "tenant": stream.tenant,
        "feature": stream.feature,
        "prompt_version": stream.prompt_version,
        "event_time": at,
        "requested_model": requested,
        "price_status": "priced",
    }
    if rng.random() < stream.error_share:
        failed: dict[str, Any] = {
            "outcome": "upstream_error",
            "http_status": 503,
            "cost_usd": Decimal(0),
        }
        return usage_event(served_model=requested, **failed, **attribution)
    served, fallback = dict(stream.aliases).get(requested, requested), {}
    if rng.random() < stream.fallback_share:
        served = "claude-3-5-haiku"
        fallback = {"attempt": 2, "fallback_reason": "http_503"}
    total_input = round(stream.input_tokens * rng.uniform(0.8, 1.2))
    cached = round(total_input * stream.cache_hit * rng.uniform(0.9, 1.0))
    tokens = TokenCounts(
        input_uncached=total_input - cached,
        cache_read=cached,
        output=round(stream.output_tokens * rng.uniform(0.5, 1.5)),
    )
    by_class = {
        name: Decimal(rate) * getattr(tokens, name) / 1_000_000
        for name, rate in RATES[served].items()
        if getattr(tokens, name)
    }
    return usage_event(
        tokens,
        served_model=served,
        provider_model=served,
        cost_usd=sum(by_class.values(), Decimal(0)),
        cost_by_class=by_class,
        **fallback,
        **attribution,
    )


def poisson(rng: random.Random, mean: float) -> int:
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


class Simulation:
    """Feeds the detector second by second and evaluates every 5 s. Events arrive in time order,
    or up to `late_s` late (so some land in buckets an evaluation already closed)."""

    def __init__(
        self,
        *streams: Stream,
        seed: int = 7,
        config: AnomalyConfig = CONFIG,
        late_s: float = 0.0,
    ) -> None:
        self.streams = list(streams)
        self.rng = random.Random(seed)
        self.detector = AnomalyDetector(config)
        self.late_s = late_s
        self.second = 0
        self.alerts: list[AlertEvent] = []

    @property
    def now(self) -> datetime:
        return START + timedelta(seconds=self.second)

    def run(self, seconds: int) -> list[AlertEvent]:
        """Alerts raised over the next `seconds` of traffic."""
        raised: list[AlertEvent] = []
        for _ in range(seconds):
            offsets = sorted(
                (self.rng.random(), i)
                for i, stream in enumerate(self.streams)
                for _ in range(poisson(self.rng, stream.rate))
            )
            for offset, i in offsets:
                at = self.now + timedelta(seconds=offset - self.rng.uniform(0, self.late_s))
                self.detector.observe(priced_call(self.streams[i], at, self.rng))
            self.second += 1
            if self.second % 5 == 0:
                raised += self.detector.evaluate(self.now)
        self.alerts += raised
        return raised

    def change(self, index: int, **fields: Any) -> datetime:
        """Changes one stream from now on; returns when."""
        self.streams[index] = replace(self.streams[index], **fields)
        return self.now


def warns(alerts: list[AlertEvent]) -> list[AlertEvent]:
    return [a for a in alerts if a.state == "WARN"]


def explanation(alert: AlertEvent) -> dict[str, Any]:
    assert alert.explanation is not None
    return alert.explanation


def parts(alert: AlertEvent) -> dict[str, Decimal]:
    """Every part of the cost change, token classes flattened as tokens_per_request.<class>."""
    split = explanation(alert)["decomposition"]
    flat = {k: Decimal(v) for k, v in split.items() if k != "tokens_per_request"}
    flat |= {f"tokens_per_request.{k}": Decimal(v) for k, v in split["tokens_per_request"].items()}
    return flat


def biggest_increase(alert: AlertEvent) -> str:
    """The part of the decomposition that raised cost most."""
    return max(parts(alert).items(), key=lambda item: item[1])[0]


def assert_exact(alert: AlertEvent) -> None:
    """The parts sum exactly to the change, which is exactly current minus baseline; and each
    side's cost per minute agrees with its calls per minute times its cost per call."""
    x = explanation(alert)
    total = Decimal(x["cost_change_usd_per_min"])
    assert sum(parts(alert).values(), Decimal(0)) == total
    current = Decimal(x["current"]["cost_usd_per_min"])
    assert current - Decimal(x["baseline"]["cost_usd_per_min"]) == total
    for side in (x["baseline"], x["current"]):
        per_min = Decimal(side["cost_usd_per_min"])
        product = Decimal(side["requests_per_min"]) * Decimal(side["cost_usd_per_request"])
        assert abs(product - per_min) <= per_min / 1000 + Decimal("1e-9")


def assert_plain_json(value: Any) -> None:
    """Strings, ints and containers only: money and ratios travel as decimal strings."""
    if isinstance(value, dict):
        for item in value.values():
            assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain_json(item)
    else:
        assert value is None or isinstance(value, str | int), value


def one_page(sim: Simulation, since: datetime, within_s: int = 60) -> AlertEvent:
    """The single WARN the anomaly raised, checked to be on time and exactly explained."""
    pages = warns(sim.alerts)
    assert len(pages) == 1, [a.message for a in pages]
    page = pages[0]
    assert page.kind == "anomaly"
    assert page.created_at - since <= timedelta(seconds=within_s)
    assert_exact(page)
    assert_plain_json(page.explanation)
    assert json.loads(page.to_wire())["explanation"] == page.explanation
    return page


def steady_tenants() -> list[Stream]:
    return [
        Stream("acme", "search", "search-v1", rate=3.0, cache_hit=0.6),
        Stream("acme", "chat", "chat-v3", rate=2.0, models=(("gpt-4o-mini", 0.8), ("gpt-4o", 0.2))),
        Stream("globex", "summarise", None, rate=2.0, input_tokens=6000, output_tokens=400),
        Stream("initech", None, None, rate=1.5, models=(("gpt-4o", 1.0),), fallback_share=0.02),
    ]


def test_steady_multi_tenant_traffic_raises_no_alert() -> None:
    sim = Simulation(*steady_tenants(), seed=11)
    assert sim.run(1200) == []
    # bounded memory: at most one entry per key however long it runs
    assert sim.detector.keys <= 3 + 3 + 2 + 5  # tenants, features, versions, (tenant, model)s


def test_calls_through_a_catalog_alias_are_not_fallbacks() -> None:
    # The relay serves an alias (cheap-chat) by its first target (gpt-4o-mini): requested and
    # served names differ, but nothing fell back. A feature moving to the alias changes no
    # cost, model or outcome, so nothing may page.
    search, *others = steady_tenants()
    sim = Simulation(search, *others)
    sim.run(WARM_UP_S)
    sim.change(0, models=(("cheap-chat", 1.0),), aliases=(("cheap-chat", "gpt-4o-mini"),))
    assert warns(sim.run(120)) == []


def test_a_prompt_version_tripling_its_input_is_paged_once_within_a_minute() -> None:
    search, *others = steady_tenants()
    sim = Simulation(replace(search, rate=6.0), *others)
    sim.run(WARM_UP_S)
    spike = sim.change(0, input_tokens=6000)
    sim.run(90)
    page = one_page(sim, spike)
    assert page.tenant == "acme"
    assert page.scope == {"tenant": "acme", "feature": "search", "prompt_version": "search-v1"}
    x = explanation(page)
    assert x["anomaly"] in ("context_bloat", "spend_spike")
    assert biggest_increase(page) == "tokens_per_request.input_uncached"
    assert Decimal(x["cost_change_usd_per_min"]) > 0
    assert "acme/search prompt search-v1" in page.message
    assert "input uncached tokens per request" in page.message

    sim.change(0, input_tokens=2000)
    later = sim.run(120)
    assert [a.state for a in later] == ["RECOVERED"]
    assert later[0].scope == page.scope and later[0].alert_id != page.alert_id


def test_a_prompt_version_spread_over_models_pages_once_for_the_version() -> None:
    # The version's calls go to three models, so each (tenant, model) key sees some of its
    # bloated calls. A model key may fire while the version is a call short of a page, and again
    # once the version's own baseline has adapted (the model keys' baselines dilute the change
    # and adapt later). Neither is a second cause: one page, for the prompt version.
    models = (("gpt-4o-mini", 0.4), ("gpt-4o", 0.3), ("claude-3-5-haiku", 0.3))
    small = {"input_tokens": 600, "output_tokens": 60, "models": models}
    sim = Simulation(
        Stream("acme", "search", "search-v1", rate=1.0, **small),
        Stream("acme", "search", "search-v2", rate=1.3, **small),
        Stream("acme", "chat", "chat-v3", rate=1.0, **small),
        Stream("globex", "summarise", None, rate=2.0, input_tokens=6000, output_tokens=400),
    )
    assert sim.run(WARM_UP_S) == []
    spike = sim.change(1, input_tokens=1800)
    sim.run(120)
    page = one_page(sim, spike)
    assert page.scope == {"tenant": "acme", "feature": "search", "prompt_version": "search-v2"}
    assert explanation(page)["anomaly"] == "context_bloat"


def test_late_and_out_of_order_events_still_count() -> None:
    search, *others = steady_tenants()
    sim = Simulation(replace(search, rate=6.0), *others, late_s=4.0)
    sim.run(WARM_UP_S)
    spike = sim.change(0, input_tokens=6000)
    sim.run(60)
    page = one_page(sim, spike)
    assert page.scope == {"tenant": "acme", "feature": "search", "prompt_version": "search-v1"}
    assert biggest_increase(page) == "tokens_per_request.input_uncached"


def test_the_same_traffic_gives_the_same_alert_ids() -> None:
    def ids() -> list[str]:
        sim = Simulation(Stream("acme", "search", "v1", rate=3.0), seed=5)
        sim.run(WARM_UP_S)
        sim.change(0, rate=15.0)
        sim.run(60)
        sim.change(0, rate=3.0)
        sim.run(120)
        return [a.alert_id for a in sim.alerts]

    first = ids()
    assert len(first) == 2 and first == ids()


def test_a_volume_spike_is_a_spend_spike_explained_by_volume() -> None:
    sim = Simulation(*steady_tenants())
    sim.run(WARM_UP_S)
    spike = sim.change(2, rate=10.0)
    sim.run(60)
    page = one_page(sim, spike)
    assert page.scope == {"tenant": "globex", "feature": "summarise"}
    assert explanation(page)["anomaly"] == "spend_spike"
    assert biggest_increase(page) == "volume"


def test_output_bloat_is_context_bloat_of_the_output_class() -> None:
    sim = Simulation(Stream("acme", "chat", rate=6.0, output_tokens=300))
    sim.run(WARM_UP_S)
    spike = sim.change(0, output_tokens=1500)
    sim.run(60)
    page = one_page(sim, spike)
    x = explanation(page)
    assert x["anomaly"] == "context_bloat"
    bloat = next(s for s in x["signals"] if s["anomaly"] == "context_bloat")
    assert [c["class"] for c in bloat["classes"]] == ["output"]
    assert biggest_increase(page) == "tokens_per_request.output"


def test_the_message_names_the_signal_that_paged_not_a_pricier_class() -> None:
    # Input triples while output grows 1.7x: output costs 4x as much per token, so it adds more
    # USD per minute. The page is about input tokens, and so must its message be.
    sim = Simulation(Stream("acme", "chat", rate=6.0, input_tokens=1000, output_tokens=1000))
    sim.run(WARM_UP_S)
    spike = sim.change(0, input_tokens=3000, output_tokens=1700)
    sim.run(60)
    page = one_page(sim, spike)
    assert explanation(page)["anomaly"] == "context_bloat"
    assert biggest_increase(page) == "tokens_per_request.output"
    assert "context bloat, input tokens per request" in page.message
    cause = page.message.rsplit("; ", 1)[1]
    assert cause.startswith("of which input uncached tokens per request (x"), page.message
    added = Decimal(cause.rsplit("+$", 1)[1].removesuffix("/min"))
    assert abs(added - parts(page)["tokens_per_request.input_uncached"]) <= Decimal("0.005")


def test_a_cache_hit_drop_shows_uncached_input_replacing_cache_reads() -> None:
    sim = Simulation(Stream("acme", "search", rate=6.0, cache_hit=0.8))
    sim.run(WARM_UP_S)
    spike = sim.change(0, cache_hit=0.05)
    sim.run(60)
    page = one_page(sim, spike)
    x = explanation(page)
    assert x["anomaly"] == "cache_hit_drop"
    before, after = (Decimal(x[w]["cache_hit_rate"]) for w in ("baseline", "current"))
    assert before > Decimal("0.7") and after < before - Decimal("0.2")
    split = parts(page)
    assert split["tokens_per_request.input_uncached"] > 0 > split["tokens_per_request.cache_read"]


def test_moving_traffic_to_a_dearer_model_is_a_model_mix_shift() -> None:
    sim = Simulation(Stream("acme", "chat", rate=6.0))
    sim.run(WARM_UP_S)
    spike = sim.change(0, models=(("gpt-4o-mini", 0.4), ("gpt-4o", 0.6)))
    sim.run(60)
    page = one_page(sim, spike)
    x = explanation(page)
    assert x["anomaly"] == "model_mix_shift"
    assert biggest_increase(page) == "model_mix"
    assert "gpt-4o" not in x["baseline"]["model_mix"]
    assert Decimal(x["current"]["model_mix"]["gpt-4o"]) > 0
    assert "gpt-4o" in page.message


def test_calls_served_by_a_fallback_model_are_a_silent_fallback() -> None:
    sim = Simulation(Stream("acme", "chat", rate=6.0, models=(("gpt-4o", 1.0),)))
    sim.run(WARM_UP_S)
    spike = sim.change(0, fallback_share=0.6)
    sim.run(60)
    page = one_page(sim, spike)
    x = explanation(page)
    assert x["anomaly"] == "silent_fallback"
    assert Decimal(x["current"]["fallback_rate"]) > Decimal("0.15")
    assert Decimal(x["current"]["model_mix"]["claude-3-5-haiku"]) > Decimal("0.15")
    assert Decimal(x["decomposition"]["model_mix"]) < 0  # the fallback model is cheaper


def test_failing_calls_are_an_error_storm() -> None:
    sim = Simulation(Stream("acme", "chat", rate=6.0), Stream("globex", rate=2.0))
    sim.run(WARM_UP_S)
    spike = sim.change(0, error_share=0.4)
    sim.run(60)
    page = one_page(sim, spike)
    x = explanation(page)
    assert x["anomaly"] == "error_storm"
    assert page.scope == {"tenant": "acme", "feature": "chat"}
    assert Decimal(x["current"]["error_rate"]) > Decimal("0.1")
    assert Decimal(x["decomposition"]["errors"]) < 0  # failed calls cost nothing here


def test_an_outage_across_every_feature_pages_once_above_the_features() -> None:
    features = [
        Stream("acme", f"feature-{i}", rate=2.0, models=(("gpt-4o", 1.0),)) for i in range(5)
    ]
    sim = Simulation(*features, Stream("globex", rate=2.0))
    sim.run(WARM_UP_S)
    outage = sim.now
    for i in range(len(features)):
        sim.change(i, error_share=0.5)
    sim.run(60)
    page = one_page(sim, outage)
    assert explanation(page)["anomaly"] == "error_storm"
    # the model every feature calls carries the whole outage: it takes the page
    assert page.scope == {"tenant": "acme", "model": "gpt-4o"}


def test_a_new_prompt_version_costing_more_per_call_is_a_cost_jump() -> None:
    sim = Simulation(Stream("acme", "search", "search-v1", rate=6.0), Stream("globex", rate=2.0))
    sim.run(WARM_UP_S)
    release = sim.change(0, prompt_version="search-v2", input_tokens=6000)
    sim.run(60)
    page = one_page(sim, release)
    assert page.scope == {"tenant": "acme", "feature": "search", "prompt_version": "search-v2"}
    x = explanation(page)
    assert x["anomaly"] == "prompt_version_cost_jump"
    assert x["baseline_basis"] == "other_versions"
    assert biggest_increase(page) == "tokens_per_request.input_uncached"
    assert Decimal(x["decomposition"]["volume"]) == 0  # compared at the new version's call rate


def test_a_tenant_below_the_spend_floor_never_alerts() -> None:
    tiny = Stream("pico", "bot", "v1", rate=0.5, input_tokens=200, output_tokens=20)
    sim = Simulation(tiny, Stream("acme", rate=3.0))
    sim.run(WARM_UP_S)
    # twice the calls, 4x the tokens, errors and fallbacks: still well under $0.01 per window
    sim.change(0, rate=1.0, input_tokens=800, error_share=0.5, fallback_share=0.5)
    assert sim.run(180) == []


def test_keys_idle_for_a_whole_baseline_are_dropped_and_late_events_ignored() -> None:
    sim = Simulation(Stream("acme", "search", "v1", rate=2.0), Stream("globex", rate=2.0))
    sim.run(WARM_UP_S)
    assert sim.detector.keys == 4 + 2
    sim.change(0, rate=0.0)
    sim.run(CONFIG.window_s + CONFIG.bucket_s * (CONFIG.baseline_buckets + 2))
    assert sim.detector.keys == 2
    stale = usage_event(tenant="late", event_time=START, cost_usd=Decimal("5"))
    sim.detector.observe(stale)
    assert sim.detector.keys == 2


@pytest.mark.parametrize(
    "changes",
    [
        {"rate": 9.0, "models": (("gpt-4o-mini", 0.5), ("gpt-4o", 0.5)), "error_share": 0.3},
        {"input_tokens": 5000, "cache_hit": 0.0, "fallback_share": 0.5},
    ],
)
def test_decomposition_sums_exactly_whatever_changes_together(changes: dict[str, Any]) -> None:
    sim = Simulation(Stream("acme", "chat", "v1", rate=3.0, cache_hit=0.5), seed=3)
    sim.run(WARM_UP_S)
    sim.change(0, **changes)
    sim.run(60)
    assert warns(sim.alerts)
    for alert in sim.alerts:
        assert_exact(alert)
        for part in parts(alert).values():
            assert part == part.quantize(Decimal("1e-10"))  # exact decimals, no float noise
