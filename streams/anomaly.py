"""Spend anomalies: a rolling robust baseline per key, with one explained alert per episode.

Pure logic that the faust worker drives: `observe()` every priced (or unpriced, or failed) usage
event, `evaluate(now)` every few seconds; the returned alerts go on the alerts topic. State is
in memory: a restarted worker relearns its baselines (no verdict for `min_baseline_buckets`).

Keys. Every event counts towards four keys: the tenant, (tenant, feature), (tenant, feature,
prompt version) and (tenant, served model); feature and prompt-version keys exist only when the
event carries them. `observe` updates one cell, (tenant, feature, prompt version, served model)
in the event's bucket (`bucket_s` wide, by event time), and each key's bucket lists the cells it
counts. The current window runs from the bucket holding `now - window_s` to `now` (the partial
current bucket included); the baseline is up to `baseline_buckets` closed buckets before it.
Older buckets are dropped, and so is a key with no bucket left and no open episode, so memory is
bounded by the keys active within one baseline. An event older than the last evaluation's
baseline is ignored; a late one in a closed bucket makes its keys recompute that bucket (and
their baseline when the bucket is in it). A key needs `min_baseline_buckets` buckets of history
before any verdict, and only buckets since its first event count (a new key is not compared
with zeros).

Verdicts. Rates are per second or per call, so windows and baselines of different lengths
compare fairly. A kind fires on (1) a practical effect against the baseline's pooled value (a
ratio or an absolute jump, see `AnomalyConfig`), (2) a robust z-score (median and MAD, with a
noise floor) against the baseline's window-sized runs of buckets, and, where the window's own
sampling noise can be modelled, (3) a z-score of that noise: compound Poisson for spend, a G-test
for shares; (2) and (3) must both reach `z_threshold`. The kinds:
- spend_spike: cost per second;
- context_bloat: tokens per call of input, output or reasoning;
- cache_hit_drop: cache reads over all input tokens;
- model_mix_shift: total variation distance between served-model shares (not on model keys);
- silent_fallback: share of successful calls that were a retry (attempt > 1) or carried a
  fallback reason (a catalog alias served by its first target is neither);
- error_storm: share of calls whose outcome is not "ok";
- prompt_version_cost_jump: a prompt version first seen within the baseline, after its feature
  already had `min_baseline_buckets` of history (so a restart is no release), whose cost per
  call is well above the feature's other versions over the same baseline.
A key whose spend in the window, and its baseline's spend per window, are both below
`min_spend_usd` gets no verdict (tiny tenants page nobody; half the floor for an open episode,
so it does not flap), nor does a window with fewer than `min_requests` calls.

Episodes. A key opens an episode (one WARN alert) when any kind fires, and closes it (one
RECOVERED alert) once no kind has held even at the clearing thresholds (half the effect and
`z_clear`, on any number of calls) for `recover_after_s`; further kinds on an open key do not
page again. The episode's anomaly is the first of `KINDS` showing (root causes before
spend_spike, their symptom); a spend spike with no cause showing yet is named by the part of the
decomposition that raised cost most (model mix, tokens per call, cache) and stays spend_spike
for volume or price. Alert ids derive from the key, the kind and the bucket the episode started
in (RECOVERED adds "recovered"), so a redelivered alert collapses downstream. A RECOVERED alert
compares with the baseline before the episode. Baselines adapt: a shift lasting about half the
baseline becomes the new normal and its episode ends as RECOVERED.

One page per cause. Keys nest: tenant > model > feature > prompt version (a model key holds the
feature and prompt-version keys whose current window used that model). A broader key does not
page
- while a more specific abnormal key (an open episode, or firing now) accounts for at least
  `explain_share` of its excess in every kind it fired (its prompt-version cost jump or spend
  spike accounts for a broader key's cost kinds by its cost change);
- while it fires nothing once the calls of its more specific keys with an open episode are taken
  out (their own baselines adapt to the change sooner than the broader one, where it is diluted,
  so sizes no longer compare; what is left is what the broader key would page for);
- for up to `window_s` while a more specific key accounts for it on fewer calls than a page
  needs (`min_requests`): that key most likely pages once its calls arrive; if it does not,
  the broader key pages.
A more specific key does not page while a broader key shows the kinds it fired with an open
episode, or with over 1 / `explain_share` times its excess (an incident building that will page
for itself). So one prompt version tripling its input tokens pages once, for the prompt version,
even when its calls spread over models; an outage spread over several features pages once, for
the model they share (or the tenant). An open episode holds while the key shows the anomaly on
the calls it has, however few: a lull in traffic is no recovery.

Explanation. The alert carries the baseline and current profile (cost and calls per minute,
tokens per call by class, cache hit rate, error and fallback rates, model mix) and the change in
cost per minute split into volume, errors, model mix, tokens per call by class and price, by
sequential substitution in that order on the identity

    cost/min = calls/min x ((1 - error share) x sum over models of
               share(model) x sum over classes of tokens per call x cost per token
               + error share x cost per failed call)

in exact rational arithmetic. Each step's cost per minute is rounded to 10^-10 USD and the parts
are differences of consecutive steps, so they sum exactly to the reported change. A factor one
side lacks (a model or class the baseline never used) takes the other side's value, so moving
to a new model counts as model mix, not price. Money leaves as Decimal strings; floats serve the
statistics only.

Cost. `observe` is one dict lookup and a handful of additions (a few microseconds per event,
whatever the number of keys); `evaluate` is linear in the keys (tens of microseconds each) and
rebuilds a key's statistics only once a window looks anomalous.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from statistics import median
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ingest.alert_event import AlertEvent, alert_id
from ingest.usage_event import UsageEvent
from tokenops.errors import ConfigError

AnomalyKind = Literal[
    "prompt_version_cost_jump",
    "silent_fallback",
    "error_storm",
    "cache_hit_drop",
    "context_bloat",
    "model_mix_shift",
    "spend_spike",
]
KINDS: tuple[AnomalyKind, ...] = get_args(AnomalyKind)
"""Most specific first: an episode's anomaly is the first of these that fired."""

_COST_KINDS = frozenset({"spend_spike", "context_bloat", "cache_hit_drop", "model_mix_shift"})
"""Kinds whose excess a more specific key's cost change can explain."""

TOKEN_CLASSES = (
    "input_uncached",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "output",
    "reasoning",
)
_TOKEN_GROUPS = {"input": (0, 1, 2, 3), "output": (4,), "reasoning": (5,)}

Key = tuple[str, str | None, str | None, str | None]
"""(tenant, feature, prompt_version, served model); unused dimensions are None."""

_ZERO = Decimal(0)
_USD_PLACES = 10
_MAD_SIGMA = 1.4826
"""MAD x this estimates the standard deviation of normal data."""


class AnomalyConfig(BaseModel):
    """Production defaults; tests shrink the buckets to see an episode in simulated seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket_s: int = Field(60, gt=0)
    """Baseline bucket width in seconds."""
    baseline_buckets: int = Field(30, gt=0)
    """Closed buckets that form the rolling baseline."""
    min_baseline_buckets: int = Field(5, gt=0)
    """No verdict for a key before it has this many baseline buckets."""
    window_s: int = Field(60, gt=0)
    """The current window: from the bucket holding `now - window_s` up to `now`."""
    min_spend_usd: Decimal = Field(Decimal("0.01"), ge=0)
    """A key spending less than this per window, now and in its baseline, never alerts."""
    min_requests: int = Field(20, gt=0)
    """No verdict on fewer calls in the current window."""
    min_events: int = Field(5, gt=0)
    """Errors or fallbacks in the current window an error storm or silent fallback needs."""
    z_threshold: float = Field(5.0, gt=0)
    """Evidence an episode needs to open: the robust z against the baseline's runs and the z of
    the window's own sampling noise must both reach it (5: a one-sided normal tail of 3e-7, as
    thousands of keys are evaluated every few seconds)."""
    z_clear: float = Field(2.5, gt=0)
    """An open episode holds while some kind stays above this z and half its effect threshold."""
    min_log_sigma: float = Field(0.1, gt=0)
    """Noise floor of log cost per second (and per request), whatever the baseline's spread."""
    spend_ratio: float = Field(2.0, gt=1)
    """Cost per second against the baseline's average."""
    bloat_ratio: float = Field(1.5, gt=1)
    """Tokens per call of a class (input, output, reasoning) against the baseline's."""
    min_token_jump: int = Field(50, ge=0)
    """Tokens per call a context bloat must add, besides the ratio."""
    cache_hit_drop: float = Field(0.2, gt=0, lt=1)
    """Fall of the cache hit rate (cache reads over input tokens), absolute."""
    min_cache_hit_rate: float = Field(0.2, ge=0, lt=1)
    """Cache hit drops are looked for only where the baseline hit rate is at least this."""
    mix_shift: float = Field(0.3, gt=0, le=1)
    """Total variation distance between the window's and the baseline's served-model shares."""
    fallback_share_jump: float = Field(0.15, gt=0, lt=1)
    """Rise of the share of successful calls served by a retry or fallback, absolute."""
    error_share_jump: float = Field(0.15, gt=0, lt=1)
    """Rise of the share of failed calls, absolute."""
    version_cost_ratio: float = Field(1.5, gt=1)
    """A new prompt version's cost per call against its feature's other versions."""
    explain_share: float = Field(0.7, gt=0.5, le=1)
    """A more specific key holding this share of a broader key's excess takes the page; one
    holding less is part of a spread incident, which the broader key pages for."""
    recover_after_s: int = Field(60, ge=0)
    """An episode ends once no kind has held for this long."""

    @model_validator(mode="after")
    def _baseline_fits(self) -> AnomalyConfig:
        if self.min_baseline_buckets > self.baseline_buckets:
            raise ValueError("min_baseline_buckets cannot exceed baseline_buckets")
        if self.z_clear > self.z_threshold:
            raise ValueError("z_clear cannot exceed z_threshold")
        return self


# --- accumulation (the hot path) -------------------------------------------------------------


class _ModelTally:
    """Successful calls served by one model (in a profile)."""

    __slots__ = ("costs", "requests", "tokens")

    def __init__(self) -> None:
        self.requests = 0
        self.tokens = [0, 0, 0, 0, 0, 0]
        self.costs: dict[str, Decimal] = {}


@dataclass(slots=True)
class _Summary:
    """A bucket's (or a window's) totals, for the statistics."""

    requests: int = 0
    ok: int = 0
    errors: int = 0
    fallbacks: int = 0
    cost: Decimal = _ZERO
    tokens: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0, 0])
    models: dict[str, int] = field(default_factory=dict)
    cost_sq: float = 0.0
    """Sum of squared call costs (USD^2), for the sampling noise of a window's spend."""
    values: dict[str, float | None] = field(default_factory=dict)
    """A closed bucket's statistics, computed once (a late event makes a new summary)."""

    @classmethod
    def total(cls, parts: list[_Summary]) -> _Summary:
        models: dict[str, int] = {}
        for part in parts:
            for model, count in part.models.items():
                models[model] = models.get(model, 0) + count
        return cls(
            sum(p.requests for p in parts),
            sum(p.ok for p in parts),
            sum(p.errors for p in parts),
            sum(p.fallbacks for p in parts),
            sum((p.cost for p in parts), _ZERO),
            [sum(column) for column in zip(*(p.tokens for p in parts), strict=True)]
            if parts
            else [0, 0, 0, 0, 0, 0],
            models,
            sum(p.cost_sq for p in parts),
        )

    def add(self, other: _Summary, sign: int = 1) -> None:
        self.requests += sign * other.requests
        self.ok += sign * other.ok
        self.errors += sign * other.errors
        self.fallbacks += sign * other.fallbacks
        self.cost += other.cost if sign > 0 else -other.cost
        self.cost_sq += sign * other.cost_sq
        for i, count in enumerate(other.tokens):
            self.tokens[i] += sign * count
        for model, count in other.models.items():
            self.models[model] = self.models.get(model, 0) + sign * count


class _Cell:
    """The calls of one (tenant, feature, prompt version, served model) in one bucket: the only
    thing `observe` updates, whatever the number of keys the calls count towards."""

    __slots__ = (
        "cost_sq",
        "costs",
        "error_cost",
        "errors",
        "fallbacks",
        "leaf",
        "model",
        "ok",
        "owners",
        "requests",
        "tokens",
    )

    def __init__(self, leaf: Key) -> None:
        self.leaf = leaf
        self.model = leaf[3] or ""
        self.requests = 0
        self.ok = 0
        self.errors = 0
        self.fallbacks = 0
        self.error_cost = _ZERO
        self.cost_sq = 0.0
        self.tokens = [0, 0, 0, 0, 0, 0]
        self.costs: dict[str, Decimal] = {}
        self.owners: list[tuple[_Series, _Bucket]] = []
        """The key buckets that count this cell."""

    def reopen(self, baseline: bool) -> None:
        """A late event changed a closed bucket: its keys recompute what they derived from it
        (its totals and, when the bucket is in a baseline, the baseline)."""
        for series, bucket in self.owners:
            bucket.summary = None
            if baseline:
                series.baseline = None


class _Bucket:
    """One key's bucket: the cells it counts, and their totals once the bucket is closed."""

    __slots__ = ("cells", "summary")

    def __init__(self) -> None:
        self.cells: list[_Cell] = []
        self.summary: _Summary | None = None

    def summarise(self, closed: bool) -> _Summary:
        """Totals of the cells; kept only for a closed bucket (an open one still changes)."""
        if self.summary is not None:
            return self.summary
        summary = _Summary()
        for cell in self.cells:
            summary.requests += cell.requests
            summary.ok += cell.ok
            summary.errors += cell.errors
            summary.fallbacks += cell.fallbacks
            summary.cost_sq += cell.cost_sq
            summary.cost += sum(cell.costs.values(), cell.error_cost)
            tokens = summary.tokens
            for i, count in enumerate(cell.tokens):
                tokens[i] += count
            if cell.ok:
                summary.models[cell.model] = summary.models.get(cell.model, 0) + cell.ok
        if closed:
            self.summary = summary
        return summary


@dataclass(slots=True)
class _Episode:
    kind: AnomalyKind
    started: datetime
    start_bucket: int
    window_b: int
    """The current window's first bucket when the episode started: the baseline before it is
    what a RECOVERED alert compares with."""
    clear_since: datetime | None = None


def _counts(key: Key, leaf: Key) -> bool:
    """Whether calls of `leaf` count towards `key` (see `AnomalyDetector._new_cell`)."""
    level = _level(key)
    if level == "model":
        return leaf[3] == key[3]
    if level == "prompt":
        return leaf[1:3] == key[1:3]
    if level == "feature":
        return leaf[1] == key[1]
    return True


class _Series:
    __slots__ = ("baseline", "buckets", "deferred_since", "episode", "first")

    def __init__(self, first: int) -> None:
        self.first = first
        self.buckets: dict[int, _Bucket] = {}
        self.episode: _Episode | None = None
        self.deferred_since: datetime | None = None
        """Since when this key has fired but waited for a more specific key building up."""
        self.baseline: _Baseline | None = None
        """Valid for the last evaluation's window; dropped by a late event in it."""

    def without(self, keys: list[Key]) -> _Series:
        """A copy of these buckets without the calls that count towards any of `keys`."""
        rest = _Series(self.first)
        for b, bucket in self.buckets.items():
            kept = rest.buckets[b] = _Bucket()
            kept.cells = [c for c in bucket.cells if not any(_counts(k, c.leaf) for k in keys)]
        return rest


_stamps = itertools.count()


class _Baseline:
    """A key's baseline: its buckets, their totals and, computed on first use (only once a
    window's effect already looks anomalous), robust statistics over window-sized runs of
    buckets. Rebuilt once per bucket, or when a late event lands in it."""

    __slots__ = ("_memo", "buckets", "first", "span", "stamp", "total")

    def __init__(
        self, buckets: list[_Summary], first: int, span: int, total: _Summary | None = None
    ) -> None:
        self.buckets = buckets
        """One per bucket since the key's first event, empty buckets included."""
        self.first = first
        self.span = span
        """Buckets per run: about the current window's length."""
        self.total = _Summary.total(buckets) if total is None else total
        self.stamp = next(_stamps)
        self._memo: dict[str, Any] = {}

    @property
    def end(self) -> int:
        """The first bucket after the baseline (the current window's first)."""
        return self.first + len(self.buckets)

    def advanced(self, first: int, entering: list[_Summary]) -> _Baseline:
        """The baseline moved on: buckets before `first` leave, `entering` ones join, and
        the totals follow by difference instead of a sum over every bucket."""
        leaving = self.buckets[: first - self.first]
        total = _Summary()
        total.add(self.total)
        for summary in leaving:
            total.add(summary, -1)
        for summary in entering:
            total.add(summary)
        return _Baseline(self.buckets[first - self.first :] + entering, first, self.span, total)

    def runs(self) -> list[_Summary]:
        """Totals of every `span` consecutive buckets: the baseline's windows, whose spread
        matches the current window's (one bucket of a window holding several is noisier)."""
        if self.span == 1:
            return self.buckets
        found: list[_Summary] | None = self._memo.get("runs")
        if found is None:
            found = self._memo["runs"] = [
                _Summary.total(self.buckets[i : i + self.span])
                for i in range(len(self.buckets) - self.span + 1)
            ]
        return found

    def robust(
        self, name: str, value: Callable[[_Summary], float | None], cacheable: bool = True
    ) -> tuple[float, float, int]:
        """Median over the runs, the MAD's estimate of the standard deviation, and how many
        runs had a value (0: no statistics). A `cacheable` value depends on its run alone, so
        a bucket computes it once however many baselines it joins."""
        found = self._memo.get(name)
        if found is None:
            values = []
            for summary in self.runs():
                if not cacheable:
                    v = value(summary)
                elif name in summary.values:
                    v = summary.values[name]
                else:
                    v = summary.values[name] = value(summary)
                if v is not None:
                    values.append(v)
            found = self._memo[name] = _robust(values) if values else (0.0, 0.0, 0)
        return found

    def memo(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._memo:
            self._memo[name] = make()
        return self._memo[name]


# --- evaluation ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Finding:
    kind: AnomalyKind
    strict: bool
    excess: float
    """How much of the anomaly this key holds, in the kind's own unit per minute."""
    cost_excess: float
    """Change in USD per minute against the baseline's average."""
    headline: str
    detail: dict[str, Any]
    parts: tuple[str, ...] = ()
    """The parts of the cost decomposition this signal is about (e.g. the token classes of the
    group whose tokens per request grew); none when the signal is cost itself."""


@dataclass(frozen=True, slots=True)
class _Evidence:
    """The fewest calls (and errors or fallbacks) in a window a verdict rests on."""

    calls: int
    events: int


_ANY = _Evidence(1, 1)
"""Enough to tell where a broader key's anomaly sits, never enough to page."""


@dataclass(slots=True)
class _View:
    key: Key
    series: _Series
    window: _Summary
    seconds: float
    base: _Baseline
    significant: bool

    @property
    def level(self) -> str:
        return _level(self.key)


def _level(key: Key) -> str:
    if key[3] is not None:
        return "model"
    if key[2] is not None:
        return "prompt"
    if key[1] is not None:
        return "feature"
    return "tenant"


_RANK = {"tenant": 0, "model": 1, "feature": 2, "prompt": 3}


def _tokens_per_call(indices: tuple[int, ...]) -> Callable[[_Summary], float | None]:
    def value(s: _Summary) -> float | None:
        return sum(s.tokens[i] for i in indices) / s.ok if s.ok else None

    return value


def _binomial_z(hits: int, n: int, base_hits: int, base_n: int) -> float:
    """How implausible `hits` of `n` window calls are next to `base_hits` of `base_n` baseline
    calls: the signed root of the G-test (likelihood ratio) on the 2x2 table. It stays honest
    for small counts and rare rates, where a normal approximation pages on noise, and it
    accounts for a short baseline's own uncertainty."""
    total, misses, base_misses = n + base_n, n - hits, base_n - base_hits
    if not n or not base_n:
        return 0.0
    rate = (hits + base_hits) / total

    def term(observed: int, expected: float) -> float:
        return observed * math.log(observed / expected) if observed > 0 else 0.0

    g = 2 * (
        term(hits, n * rate)
        + term(misses, n * (1 - rate))
        + term(base_hits, base_n * rate)
        + term(base_misses, base_n * (1 - rate))
    )
    return math.copysign(math.sqrt(max(g, 0.0)), hits / n - base_hits / base_n)


def _poisson_z(count: float, seconds: float, base_count: float, base_seconds: float) -> float:
    """How implausible `count` events in `seconds` are next to `base_count` in `base_seconds`
    at one rate: the signed root of the G-test of two Poisson rates (honest for small counts,
    and for a short baseline's own uncertainty)."""
    total = count + base_count
    if not total:
        return 0.0
    expected = total * seconds / (seconds + base_seconds)

    def term(observed: float, mean: float) -> float:
        return observed * math.log(observed / mean) if observed > 0 else 0.0

    g = 2 * (term(count, expected) + term(base_count, total - expected))
    return math.copysign(math.sqrt(max(g, 0.0)), count - expected)


def _robust(values: list[float]) -> tuple[float, float, int]:
    centre = median(values)
    return centre, _MAD_SIGMA * median([abs(v - centre) for v in values]), len(values)


def _hit_rate(s: _Summary) -> float | None:
    """Cache reads over all input tokens."""
    total = s.tokens[0] + s.tokens[1] + s.tokens[2] + s.tokens[3]
    return s.tokens[1] / total if total else None


def _clearing_ratio(threshold: float) -> float:
    return 1 + (threshold - 1) / 2


class _Gate:
    """An effect and a z-score checked against the opening and the clearing thresholds."""

    def __init__(self, config: AnomalyConfig) -> None:
        self.z = config.z_threshold
        self.z_clear = config.z_clear

    def ratio(self, value: float, threshold: float, z: float) -> tuple[bool, bool]:
        """(opens, holds) for an effect measured as a ratio."""
        holds = value >= _clearing_ratio(threshold) and z >= self.z_clear
        return value >= threshold and z >= self.z, holds

    def jump(self, value: float, threshold: float, z: float) -> tuple[bool, bool]:
        """(opens, holds) for an effect measured as an absolute jump."""
        return value >= threshold and z >= self.z, value >= threshold / 2 and z >= self.z_clear


class AnomalyDetector:
    """Per-key baselines and episodes in memory; one detector sees all events of its tenants
    (the usage topic is keyed by tenant, so one per worker is enough). Not thread-safe."""

    def __init__(self, config: AnomalyConfig) -> None:
        self.config = config
        self._bucket_s = config.bucket_s
        self._series: dict[Key, _Series] = {}
        self._leaves: dict[Key, dict[int, _Cell]] = {}
        self._closed = -(2**62)
        """Buckets before this one were closed at the last evaluation (their totals are kept)."""
        self._sealed = -(2**62)
        """Buckets before this one were in the baselines of the last evaluation."""
        self._gate = _Gate(config)
        self._empty = _Summary()
        self._span = max(1, round(config.window_s / config.bucket_s))
        self._evidence = _Evidence(config.min_requests, config.min_events)

    @property
    def keys(self) -> int:
        """Keys held in memory."""
        return len(self._series)

    def observe(self, event: UsageEvent) -> None:
        """Account one priced (or unpriced/error) event in its bucket(s) by event.event_time."""
        b = int(event.event_time.timestamp()) // self._bucket_s
        if b < self._sealed - self.config.baseline_buckets:
            return  # older than the last evaluation's baseline: no verdict would use it
        model = event.served_model
        leaf = (event.tenant, event.feature, event.prompt_version, model)
        cells = self._leaves.get(leaf)
        if cells is None:
            cells = self._leaves[leaf] = {}
        cell = cells.get(b)
        if cell is None:
            cell = cells[b] = self._new_cell(leaf, b)
        elif b < self._closed:
            cell.reopen(b < self._sealed)
        cost = event.cost_usd or _ZERO
        cell.requests += 1
        if cost:
            cell.cost_sq += float(cost) ** 2  # statistics only
        if event.outcome != "ok":
            cell.errors += 1
            cell.error_cost += cost
            return
        cell.ok += 1
        # A fallback is what the relay says it did; a catalog alias served by its first target
        # (claude-3-5-sonnet -> claude-3-5-sonnet-latest) is not one.
        if event.attempt > 1 or event.fallback_reason is not None:
            cell.fallbacks += 1
        t, tokens = event.tokens, cell.tokens
        tokens[0] += t.input_uncached
        tokens[1] += t.cache_read
        tokens[2] += t.cache_write
        tokens[3] += t.cache_write_1h
        tokens[4] += t.output
        tokens[5] += t.reasoning
        by_class = event.cost_by_class
        if by_class is None:
            by_class = {"unclassified": cost} if cost else {}
        costs = cell.costs
        for name, amount in by_class.items():
            costs[name] = costs.get(name, _ZERO) + amount

    def _new_cell(self, leaf: Key, b: int) -> _Cell:
        """A leaf's first call in bucket `b`: the cell joins the bucket of each key it counts
        towards (the tenant, its served model, its feature, its prompt version)."""
        tenant, feature, version, model = leaf
        assert model is not None
        cell = _Cell(leaf)
        keys: list[Key] = [(tenant, None, None, None), (tenant, None, None, model)]
        if feature is not None:
            keys.append((tenant, feature, None, None))
        if version is not None:
            keys.append((tenant, feature, version, None))
        for key in keys:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(b)
            series.first = min(series.first, b)
            bucket = series.buckets.get(b)
            if bucket is None:
                bucket = series.buckets[b] = _Bucket()
            bucket.cells.append(cell)
            cell.owners.append((series, bucket))
        if b < self._closed:
            cell.reopen(b < self._sealed)
        return cell

    def evaluate(self, now: datetime) -> list[AlertEvent]:
        """Compare each key's current window with its baseline; return alerts for episodes that
        start (state "WARN", kind "anomaly") or end (state "RECOVERED") at this evaluation.

        `now` is aware: wall-clock time when the stream is live, the latest event time while
        it replays a backlog (a clock far ahead of the events sees empty windows)."""
        cfg = self.config
        bs = cfg.bucket_s
        now_s = now.timestamp()
        now_b = math.floor(now_s / bs)
        window_b = math.floor((now_s - cfg.window_s) / bs)
        base_lo = window_b - cfg.baseline_buckets
        self._trim(base_lo)
        self._sealed = window_b
        self._closed = now_b
        window_start = datetime.fromtimestamp(window_b * bs, UTC)
        frame = _Frame(now, now_b, window_b, window_start, max(now_s - window_b * bs, 1e-6))
        views = {key: self._view(key, s, frame) for key, s in self._series.items()}
        findings = {key: self._findings(view, views) for key, view in views.items()}
        by_tenant: dict[str, list[Key]] = {}
        for key in views:
            by_tenant.setdefault(key[0], []).append(key)

        tentative: dict[Key, dict[AnomalyKind, _Finding]] = {}

        def evidence(k: Key) -> dict[AnomalyKind, _Finding]:
            """What key `k` shows, on as little as one call when a page would need more."""
            if findings[k]:
                return findings[k]
            if k not in tentative:
                tentative[k] = self._findings(views[k], views, _ANY)
            return tentative[k]

        alerts: list[AlertEvent] = []
        for key, view in views.items():
            episode = view.series.episode
            if episode is None:
                continue
            # too few calls to page is no sign of recovery: a key still showing the anomaly
            # on the calls it has holds its episode (one that stops calling recovers)
            if evidence(key):
                episode.clear_since = None
            elif episode.clear_since is None:
                episode.clear_since = now
            if episode.clear_since is not None and (
                now - episode.clear_since >= timedelta(seconds=cfg.recover_after_s)
            ):
                view.series.episode = None
                alerts.append(self._alert(view, views, episode, "RECOVERED", frame, findings[key]))

        for key in sorted(views, key=lambda k: _RANK[_level(k)]):
            view = views[key]
            series = view.series
            firing = [f for f in findings[key].values() if f.strict]
            if series.episode is not None or not firing:
                series.deferred_since = None
                continue
            family = by_tenant[key[0]]
            if self._covered_below(view, family, views, frame):
                series.deferred_since = None
                continue
            below = self._below(key, firing, family, views, findings, evidence)
            if below == "paging":
                series.deferred_since = None
                continue
            if below == "building":
                # a more specific key holds it but lacks the calls to page yet: wait for it,
                # for one window at most (it may never get them)
                if series.deferred_since is None:
                    series.deferred_since = now
                if now - series.deferred_since < timedelta(seconds=cfg.window_s):
                    continue
            series.deferred_since = None
            if self._part_of_above(key, firing, family, views, findings):
                continue
            # a symptom (spend) that fired with a cause already showing is the cause's episode
            kind = next(k for k in KINDS if k in findings[key])
            if kind == "spend_spike":
                kind = self._cause_of_spend(view, views, frame)
            episode = _Episode(kind, now, now_b, window_b)
            view.series.episode = episode
            alerts.append(self._alert(view, views, episode, "WARN", frame, findings[key]))
        return alerts

    # -- housekeeping and views ----------------------------------------------------------------

    def _trim(self, base_lo: int) -> None:
        for leaf in list(self._leaves):
            cells = self._leaves[leaf]
            for b in [b for b in cells if b < base_lo]:
                del cells[b]
            if not cells:
                del self._leaves[leaf]
        for key in list(self._series):
            s = self._series[key]
            for b in [b for b in s.buckets if b < base_lo]:
                del s.buckets[b]
            if not s.buckets and s.episode is None:
                del self._series[key]

    def _view(self, key: Key, s: _Series, frame: _Frame) -> _View:
        window = _Summary.total(
            [
                bucket.summarise(closed=b < frame.now_b)
                for b in range(frame.window_b, frame.now_b + 1)
                if (bucket := s.buckets.get(b)) is not None
            ]
        )
        base = s.baseline
        first = max(s.first, frame.window_b - self.config.baseline_buckets)
        if base is None or base.end != frame.window_b:
            start = first
            if base is not None and base.first <= first and base.end <= frame.window_b:
                start = max(base.end, first)  # only the buckets that closed since
            summaries = [
                bucket.summarise(closed=True)
                if (bucket := s.buckets.get(b)) is not None
                else self._empty
                for b in range(start, frame.window_b)
            ]
            if start == first:
                base = _Baseline(summaries, first, self._span)
            else:
                assert base is not None
                base = base.advanced(first, summaries)
            s.baseline = base
        floor = self.config.min_spend_usd
        if s.episode is not None:
            floor /= 2  # hysteresis: an open episode does not flap on the floor
        usual = float(base.total.cost) / (len(base.buckets) * self._bucket_s) if base.buckets else 0
        significant = window.cost >= floor or usual * frame.seconds >= float(floor)
        return _View(key, s, window, frame.seconds, base, significant)

    # -- verdicts ------------------------------------------------------------------------------

    def _findings(
        self, view: _View, views: dict[Key, _View], least: _Evidence | None = None
    ) -> dict[AnomalyKind, _Finding]:
        """The kinds this key shows; with `least`, also on fewer calls than a page needs (to
        tell where a broader key's anomaly sits, or that an open episode still holds)."""
        cfg = self.config
        if not view.significant:
            return {}
        if least is None:
            if view.window.requests < cfg.min_requests:
                return {}
            least = self._evidence
        found: list[_Finding | None] = []
        if len(view.base.buckets) >= cfg.min_baseline_buckets:
            found += [
                self._spend_spike(view),
                self._context_bloat(view, least),
                self._cache_hit_drop(view, least),
                self._silent_fallback(view, least),
                self._error_storm(view, least),
            ]
            if view.level != "model":
                found.append(self._model_mix_shift(view, least))
        if view.level == "prompt":
            found.append(self._prompt_version_cost_jump(view, views))
        return {f.kind: f for f in found if f is not None}

    def _runs_needed(self, base: _Baseline) -> int:
        return max(1, self.config.min_baseline_buckets - base.span + 1)

    def _cost_excess(self, view: _View) -> float:
        """USD per minute above the baseline's average."""
        usual = float(view.base.total.cost) / (len(view.base.buckets) * self._bucket_s)
        return (float(view.window.cost) / view.seconds - usual) * 60

    def _spend_spike(self, view: _View) -> _Finding | None:
        cfg, base = self.config, view.base
        # a tenth of the floor's rate keeps empty buckets finite in log space
        tiny = float(cfg.min_spend_usd) / cfg.window_s / 10 or 1e-12
        seconds = len(base.buckets) * self._bucket_s
        usual = float(base.total.cost) / seconds
        current = float(view.window.cost) / view.seconds
        ratio = (current + tiny) / (usual + tiny)
        if ratio < _clearing_ratio(cfg.spend_ratio):
            return None
        run_s = base.span * self._bucket_s
        centre, spread, n = base.robust(
            "log cost rate", lambda s: math.log(float(s.cost) / run_s + tiny)
        )
        if n < self._runs_needed(base):
            return None
        robust_z = (math.log(current + tiny) - centre) / max(spread, cfg.min_log_sigma)
        # spend as a count of "effective calls" (cost / (E[c^2] / E[c]) has a compound Poisson
        # variance equal to its mean): heavy-tailed call costs make few effective calls, so a
        # high window takes more evidence. E[c^2] / E[c] is estimated as the null hypothesis
        # has it, over baseline and window together: a young baseline that happened to see
        # only cheap models must not make a window's few dear calls look impossible.
        total = base.total
        pooled = float(total.cost) + float(view.window.cost)
        unit = (total.cost_sq + view.window.cost_sq) / pooled if pooled > 0 else 0.0
        sampled = math.inf
        if unit > 0:
            spent, usual_spent = float(view.window.cost) / unit, float(total.cost) / unit
            sampled = _poisson_z(spent, view.seconds, usual_spent, seconds)
        z = min(robust_z, sampled)
        opens, holds = self._gate.ratio(ratio, cfg.spend_ratio, z)
        if not holds:
            return None
        excess = (current - usual) * 60
        return _Finding(
            "spend_spike",
            opens,
            excess,
            excess,
            f"cost per minute {ratio:.1f}x its usual level",
            {"ratio": f"{ratio:.2f}", "z": f"{z:.1f}"},
        )

    def _context_bloat(self, view: _View, least: _Evidence) -> _Finding | None:
        cfg, base, window = self.config, view.base, view.window
        if window.ok < least.calls or not base.total.ok:
            return None
        classes: list[dict[str, str]] = []
        opened, excess, headline = False, 0.0, ""
        headline_parts: tuple[str, ...] = ()
        for group, indices in _TOKEN_GROUPS.items():
            usual = sum(base.total.tokens[i] for i in indices) / base.total.ok
            current = sum(window.tokens[i] for i in indices) / window.ok
            ratio = current / usual if usual else math.inf
            grown = current - usual
            if ratio < _clearing_ratio(cfg.bloat_ratio) or grown < cfg.min_token_jump / 2:
                continue
            centre, spread, n = base.robust(f"tokens {group}", _tokens_per_call(indices))
            if n < self._runs_needed(base):
                continue
            z = (current - centre) / max(spread, 0.1 * centre, 1.0)
            opens, holds = self._gate.ratio(ratio, cfg.bloat_ratio, z)
            if not holds:
                continue
            opens = opens and grown >= cfg.min_token_jump
            if (opens and not opened) or not headline:
                shown = f"{ratio:.1f}x" if usual else "from 0"
                headline = f"{group} tokens per request {shown} its usual level"
                headline_parts = tuple(f"tokens_per_request.{TOKEN_CLASSES[i]}" for i in indices)
            opened = opened or opens
            excess += grown * window.ok * 60 / view.seconds
            classes.append(
                {
                    "class": group,
                    "baseline": f"{usual:.1f}",
                    "current": f"{current:.1f}",
                    "ratio": f"{ratio:.2f}",
                    "z": f"{z:.1f}",
                }
            )
        if not classes:
            return None
        return _Finding(
            "context_bloat",
            opened,
            excess,
            self._cost_excess(view),
            headline,
            {"classes": classes},
            headline_parts,
        )

    def _cache_hit_drop(self, view: _View, least: _Evidence) -> _Finding | None:
        cfg, base, window = self.config, view.base, view.window
        usual, current = _hit_rate(base.total), _hit_rate(window)
        if usual is None or current is None or usual < cfg.min_cache_hit_rate:
            return None
        if window.ok < least.calls or usual - current < cfg.cache_hit_drop / 2:
            return None
        centre, spread, n = base.robust("cache hit rate", _hit_rate)
        if n < self._runs_needed(base):
            return None
        z = (centre - current) / max(spread, 0.02)
        opens, holds = self._gate.jump(usual - current, cfg.cache_hit_drop, z)
        if not holds:
            return None
        lost = (usual - current) * sum(window.tokens[:4])
        return _Finding(
            "cache_hit_drop",
            opens,
            lost * 60 / view.seconds,
            self._cost_excess(view),
            f"cache hit rate {usual:.0%} -> {current:.0%}",
            {"baseline": f"{usual:.4f}", "current": f"{current:.4f}", "z": f"{z:.1f}"},
            ("tokens_per_request.input_uncached", "tokens_per_request.cache_read"),
        )

    def _model_mix_shift(self, view: _View, least: _Evidence) -> _Finding | None:
        cfg, window = self.config, view.window
        base = view.base.total
        if not base.ok or window.ok < least.calls:
            return None
        usual = {m: n / base.ok for m, n in base.models.items() if n}

        def distance(s: _Summary) -> float | None:
            if not s.ok:
                return None
            shares = {m: n / s.ok for m, n in s.models.items() if n}
            models = usual.keys() | shares.keys()
            return sum(abs(shares.get(m, 0) - usual.get(m, 0)) for m in models) / 2

        current = distance(window) or 0.0
        if current < cfg.mix_shift / 2:
            return None
        centre, spread, n = view.base.robust("model mix distance", distance, cacheable=False)
        if n < self._runs_needed(view.base):
            return None
        sampled = max(
            abs(_binomial_z(window.models.get(m, 0), window.ok, base.models.get(m, 0), base.ok))
            for m in usual.keys() | window.models.keys()
        )
        z = min((current - centre) / max(spread, 0.05), sampled)
        opens, holds = self._gate.jump(current, cfg.mix_shift, z)
        if not holds:
            return None
        now_shares = {m: n / window.ok for m, n in window.models.items() if n}
        grown = max(now_shares, key=lambda m: now_shares[m] - usual.get(m, 0))
        return _Finding(
            "model_mix_shift",
            opens,
            current * window.ok * 60 / view.seconds,
            self._cost_excess(view),
            f"model mix shifted {current:.0%} ({grown} {usual.get(grown, 0):.0%} -> "
            f"{now_shares[grown]:.0%})",
            {"distance": f"{current:.4f}", "z": f"{z:.1f}"},
            ("model_mix",),
        )

    def _share_jump(
        self,
        view: _View,
        kind: AnomalyKind,
        label: str,
        part: str,
        whole: str,
        threshold: float,
        least: _Evidence,
    ) -> _Finding | None:
        """A rise in the share `part / whole` of calls (errors of all, fallbacks of ok)."""
        base = view.base
        n, hits = getattr(view.window, whole), getattr(view.window, part)
        base_hits, base_n = getattr(base.total, part), getattr(base.total, whole)
        if n < least.calls or hits < least.events:
            return None
        usual, current = base_hits / max(base_n, 1), hits / n
        if current - usual < threshold / 2:
            return None
        centre, spread, count = base.robust(
            kind, lambda s: getattr(s, part) / getattr(s, whole) if getattr(s, whole) else None
        )
        if count < self._runs_needed(base):
            return None
        robust_z = (current - centre) / max(spread, 0.01)
        z = min(robust_z, _binomial_z(hits, n, base_hits, base_n))
        opens, holds = self._gate.jump(current - usual, threshold, z)
        if not holds:
            return None
        return _Finding(
            kind,
            opens,
            (current - usual) * n * 60 / view.seconds,
            self._cost_excess(view),
            f"{label} {usual:.0%} -> {current:.0%}",
            {"baseline": f"{usual:.4f}", "current": f"{current:.4f}", "z": f"{z:.1f}"},
            ("errors",) if kind == "error_storm" else ("model_mix",),
        )

    def _silent_fallback(self, view: _View, least: _Evidence) -> _Finding | None:
        threshold = self.config.fallback_share_jump
        return self._share_jump(
            view, "silent_fallback", "fallback share", "fallbacks", "ok", threshold, least
        )

    def _error_storm(self, view: _View, least: _Evidence) -> _Finding | None:
        threshold = self.config.error_share_jump
        return self._share_jump(
            view, "error_storm", "error rate", "errors", "requests", threshold, least
        )

    @staticmethod
    def _parent(view: _View, views: dict[Key, _View]) -> _View:
        """The feature (or, without one, the tenant) of a prompt-version key."""
        return views[(view.key[0], view.key[1], None, None)]

    def _siblings(self, view: _View, views: dict[Key, _View]) -> _Baseline:
        """The parent's baseline without this version: what the other versions did."""
        parent = self._parent(view, views).base

        def others() -> _Baseline:
            offset = view.base.first - parent.first
            buckets = []
            for i, summary in enumerate(parent.buckets):
                rest = _Summary()
                rest.add(summary)
                if 0 <= i - offset < len(view.base.buckets):
                    rest.add(view.base.buckets[i - offset], -1)
                buckets.append(rest)
            return _Baseline(buckets, parent.first, parent.span)

        built: _Baseline = view.base.memo(f"siblings {parent.stamp}", others)
        return built

    def _prompt_version_cost_jump(self, view: _View, views: dict[Key, _View]) -> _Finding | None:
        cfg, window = self.config, view.window
        parent = self._parent(view, views)
        if view.series.first < max(view.base.first, parent.series.first + cfg.min_baseline_buckets):
            return None  # not new: older than the baseline, or as old as its feature's history
        # the other versions' totals: the version's own buckets are all inside its parent's
        others = _Summary()
        others.add(parent.base.total)
        others.add(view.base.total, -1)
        if others.requests < cfg.min_requests or others.cost <= 0 or window.cost <= 0:
            return None
        usual = float(others.cost) / others.requests
        current = float(window.cost) / window.requests
        ratio = current / usual
        if ratio < _clearing_ratio(cfg.version_cost_ratio):
            return None
        siblings = self._siblings(view, views)
        centre, spread, n = siblings.robust(
            "log cost per request",
            lambda s: math.log(float(s.cost) / s.requests) if s.requests and s.cost > 0 else None,
        )
        if n < self._runs_needed(siblings):
            return None
        per_call = math.sqrt(max(others.cost_sq / others.requests - usual**2, 0.0))
        sampled = (current - usual) / max(per_call / math.sqrt(window.requests), usual / 100)
        z = min((math.log(current) - centre) / max(spread, cfg.min_log_sigma), sampled)
        opens, holds = self._gate.ratio(ratio, cfg.version_cost_ratio, z)
        if not holds:
            return None
        excess = (current - usual) * window.requests * 60 / view.seconds
        return _Finding(
            "prompt_version_cost_jump",
            opens,
            excess,
            excess,
            f"new prompt version costs {ratio:.1f}x per request of the feature's other versions",
            {"ratio": f"{ratio:.2f}", "z": f"{z:.1f}"},
        )

    # -- one page per cause --------------------------------------------------------------------

    @staticmethod
    def _within(outer: Key, inner: Key, views: dict[Key, _View]) -> bool:
        """Whether `inner` is a more specific part of `outer` (same tenant)."""
        if outer == inner:
            return False
        outer_level, inner_level = _level(outer), _level(inner)
        if outer_level == "tenant":
            return True
        if outer_level == "model":
            return inner_level in ("feature", "prompt") and bool(
                views[inner].window.models.get(outer[3] or "")
            )
        if outer_level == "feature":
            return inner_level == "prompt" and inner[1] == outer[1]
        return False

    def _explains(self, inner: dict[AnomalyKind, _Finding], outer: _Finding) -> bool:
        share = self.config.explain_share
        own = inner.get(outer.kind)
        if own is not None and own.excess >= share * outer.excess:
            return True
        costly = inner.get("prompt_version_cost_jump") or inner.get("spend_spike")
        return (
            outer.kind in _COST_KINDS
            and costly is not None
            and costly.cost_excess >= share * outer.cost_excess
        )

    def _covered_below(
        self, view: _View, family: list[Key], views: dict[Key, _View], frame: _Frame
    ) -> bool:
        """Whether the anomaly of this key is all in more specific keys that already paged: the
        key without their calls fires nothing. (Their baselines adapt sooner than this key's, in
        which their change is diluted, so comparing sizes would page again for the same cause.)"""
        paged = [
            k
            for k in family
            if views[k].series.episode is not None and self._within(view.key, k, views)
        ]
        if not paged:
            return False
        rest = self._view(view.key, view.series.without(paged), frame)
        return not any(f.strict for f in self._findings(rest, views).values())

    def _below(
        self,
        key: Key,
        firing: list[_Finding],
        family: list[Key],
        views: dict[Key, _View],
        findings: dict[Key, dict[AnomalyKind, _Finding]],
        evidence: Callable[[Key], dict[AnomalyKind, _Finding]],
    ) -> Literal["paging", "building", None]:
        """Whether more specific keys account for every kind this key fired: "paging" when
        those keys have an open episode or fire (their momentary lack of calls aside), "building"
        when some only show it on fewer calls than a page needs, None when they do not."""
        inner = [k for k in family if self._within(key, k, views)]
        paging = [
            evidence(k)
            for k in inner
            if views[k].series.episode is not None or any(f.strict for f in findings[k].values())
        ]
        if all(any(self._explains(found, f) for found in paging) for f in firing):
            return "paging"
        shown = [found for k in inner if (found := evidence(k))]
        if all(any(self._explains(found, f) for found in shown) for f in firing):
            return "building"
        return None

    def _part_of_above(
        self,
        key: Key,
        firing: list[_Finding],
        family: list[Key],
        views: dict[Key, _View],
        findings: dict[Key, dict[AnomalyKind, _Finding]],
    ) -> bool:
        """A broader key showing the same kinds holds the incident this key is part of: its open
        episode, or one building that is over 1 / `explain_share` times this key's size (it
        pages once it fires, unless a more specific key explains it)."""
        share = self.config.explain_share
        for k in family:
            outer = findings[k]
            if not self._within(k, key, views) or not all(f.kind in outer for f in firing):
                continue
            if views[k].series.episode is not None or all(
                f.excess < share * outer[f.kind].excess for f in firing
            ):
                return True
        return False

    # -- alerts --------------------------------------------------------------------------------

    def _explain(
        self,
        view: _View,
        views: dict[Key, _View],
        kind: AnomalyKind,
        frame: _Frame,
        before: int | None = None,
    ) -> tuple[_Profile, _Profile, _Change, str]:
        """Baseline and current profiles, the decomposed change and the baseline's basis: the
        other versions for a prompt-version cost jump, else the key's own baseline (up to
        bucket `before`, when that leaves some)."""
        current = self._profile(view.series, range(frame.window_b, frame.now_b + 1))
        current.seconds = _seconds(frame.now - frame.window_start)
        if kind == "prompt_version_cost_jump":
            baseline, basis = self._sibling_profile(view, views, current), "other_versions"
        else:
            end = frame.window_b
            if before is not None and view.base.first < before < end:
                end = before
            baseline = self._profile(view.series, range(view.base.first, end))
            baseline.seconds = Fraction(max(end - view.base.first, 1) * self._bucket_s)
            basis = "own_baseline" if end == frame.window_b else "own_baseline_before_episode"
        return baseline, current, _decompose(baseline, current), basis

    def _cause_of_spend(self, view: _View, views: dict[Key, _View], frame: _Frame) -> AnomalyKind:
        """The kind a spend spike is, by the part of the decomposition that raised cost most."""
        baseline, current, change, _ = self._explain(view, views, "spend_spike", frame)
        part, _ = change.driver(baseline, current)
        if part == "model_mix":
            return "model_mix_shift"
        if (
            part == "tokens_per_request.input_uncached"
            and change.tokens_per_request["cache_read"] < 0
        ):
            return "cache_hit_drop"
        if part.startswith("tokens_per_request."):
            return "context_bloat"
        return "spend_spike"

    def _alert(
        self,
        view: _View,
        views: dict[Key, _View],
        episode: _Episode,
        state: Literal["WARN", "RECOVERED"],
        frame: _Frame,
        findings: dict[AnomalyKind, _Finding],
    ) -> AlertEvent:
        tenant, feature, version, model = view.key
        start = datetime.fromtimestamp(episode.start_bucket * self._bucket_s, UTC).isoformat()
        parts: list[object] = ["anomaly", tenant, feature, version, model, episode.kind, start]
        if state == "RECOVERED":
            parts.append("recovered")
        before = episode.window_b if state == "RECOVERED" else None
        baseline, current, change, basis = self._explain(view, views, episode.kind, frame, before)
        explanation: dict[str, Any] = {
            "anomaly": episode.kind,
            "level": view.level,
            "episode_started_at": episode.started.isoformat(),
            "signals": [
                {"anomaly": f.kind, "headline": f.headline, **f.detail}
                for f in sorted(findings.values(), key=lambda f: KINDS.index(f.kind))
            ],
            "baseline_basis": basis,
            "baseline": _describe(baseline, change.baseline),
            "current": _describe(current, change.current),
            "cost_change_usd_per_min": _text(change.total),
            "decomposition": change.as_dict(),
            "decomposition_method": (
                "sequential substitution in the order volume, errors, model_mix, "
                "tokens_per_request (by class), price; parts sum exactly to the change"
            ),
        }
        label = _label(view.key)
        what = episode.kind.replace("_", " ")
        ratio = _ratio_text(change.current, change.baseline)
        if state == "WARN":
            finding = findings.get(episode.kind)
            shown = (
                finding.headline if finding else _profile_headline(episode.kind, baseline, current)
            )
            headline = f"{what}, {shown}" if shown and episode.kind != "spend_spike" else what
            message = (
                f"{label}: {headline}; cost per minute {ratio} baseline "
                f"({_signed_usd(change.total)}/min); "
                + change.cause(baseline, current, finding.parts if finding else ())
            )
        else:
            lasted = _duration_text(frame.now - episode.started)
            message = (
                f"{label}: {what} recovered after {lasted}; cost per minute now {ratio} baseline"
            )
        scope: dict[str, Any] = {"tenant": tenant}
        if view.level in ("feature", "prompt"):
            scope["feature"] = feature
        if view.level == "prompt":
            scope["prompt_version"] = version
        if view.level == "model":
            scope["model"] = model
        return AlertEvent(
            alert_id=alert_id(*parts),
            kind="anomaly",
            tenant=tenant,
            scope=scope,
            state=state,
            period=f"{self._bucket_s}s",
            period_start=frame.window_start,
            created_at=frame.now,
            trigger_event_id=None,
            message=message,
            explanation=explanation,
        )

    @staticmethod
    def _profile(s: _Series, buckets: Iterable[int], sign: int = 1) -> _Profile:
        profile = _Profile()
        for b in buckets:
            bucket = s.buckets.get(b)
            if bucket is not None:
                profile.add(bucket, sign)
        return profile

    def _sibling_profile(self, view: _View, views: dict[Key, _View], current: _Profile) -> _Profile:
        """The other versions' calls over the baseline, at this version's call rate."""
        parent = self._parent(view, views)
        span = range(parent.base.first, parent.base.first + len(parent.base.buckets))
        profile = self._profile(parent.series, span)
        for b in span:
            bucket = view.series.buckets.get(b)
            if bucket is not None:
                profile.add(bucket, -1)
        if profile.requests and current.requests:
            profile.seconds = Fraction(profile.requests) * current.seconds / current.requests
        else:
            profile.seconds = Fraction(max(len(parent.base.buckets), 1) * self._bucket_s)
        return profile


@dataclass(frozen=True, slots=True)
class _Frame:
    now: datetime
    now_b: int
    window_b: int
    window_start: datetime
    seconds: float


# --- exact explanation -----------------------------------------------------------------------


class _Profile:
    """Exact totals of some buckets, with the per-model detail the decomposition needs."""

    __slots__ = ("error_cost", "errors", "fallbacks", "models", "requests", "seconds")

    def __init__(self) -> None:
        self.seconds = Fraction(1)
        self.requests = 0
        self.errors = 0
        self.fallbacks = 0
        self.error_cost = _ZERO
        self.models: dict[str, _ModelTally] = {}

    def add(self, bucket: _Bucket, sign: int) -> None:
        for cell in bucket.cells:
            self.requests += sign * cell.requests
            self.errors += sign * cell.errors
            self.fallbacks += sign * cell.fallbacks
            self.error_cost += cell.error_cost if sign > 0 else -cell.error_cost
            if not cell.ok:
                continue
            mine = self.models.get(cell.model)
            if mine is None:
                mine = self.models[cell.model] = _ModelTally()
            mine.requests += sign * cell.ok
            for i, count in enumerate(cell.tokens):
                mine.tokens[i] += sign * count
            for name, amount in cell.costs.items():
                mine.costs[name] = mine.costs.get(name, _ZERO) + (amount if sign > 0 else -amount)

    @property
    def ok(self) -> int:
        return sum(t.requests for t in self.models.values())

    @property
    def cost(self) -> Decimal:
        return sum((a for t in self.models.values() for a in t.costs.values()), self.error_cost)


_ModelClass = tuple[str, str]
"""(model, cost class)."""


@dataclass(slots=True)
class _Factors:
    """The identity's factors; None where one side cannot define one (no calls, no errors...)."""

    volume: Fraction | None
    error_share: Fraction | None
    error_cost: Fraction | None
    mix: dict[str, Fraction] | None
    per_request: dict[_ModelClass, Fraction | None]
    """Units (tokens, or 1 for per-call fees) per successful call of the model."""
    unit_cost: dict[_ModelClass, Fraction | None]

    @classmethod
    def of(cls, p: _Profile) -> _Factors:
        ok = p.ok
        per_request: dict[_ModelClass, Fraction | None] = {}
        unit_cost: dict[_ModelClass, Fraction | None] = {}
        for model, tally in p.models.items():
            names = set(TOKEN_CLASSES) | set(tally.costs)
            for name in names:
                cost = Fraction(tally.costs.get(name, _ZERO))
                if name in TOKEN_CLASSES and (tally.tokens[TOKEN_CLASSES.index(name)] or not cost):
                    units = tally.tokens[TOKEN_CLASSES.index(name)]
                else:
                    units = tally.requests  # per-call fees, or a cost with no token count
                cell = (model, name)
                per_request[cell] = Fraction(units, tally.requests) if tally.requests else None
                unit_cost[cell] = cost / units if units else None
        return cls(
            volume=Fraction(p.requests * 60) / p.seconds,
            error_share=Fraction(p.errors, p.requests) if p.requests else None,
            error_cost=Fraction(p.error_cost) / p.errors if p.errors else None,
            mix={m: Fraction(t.requests, ok) for m, t in p.models.items()} if ok else None,
            per_request=per_request,
            unit_cost=unit_cost,
        )

    def filled(self, other: _Factors) -> _Factors:
        """Every factor defined: missing ones taken from `other`, else zero."""

        def pick(own: Fraction | None, theirs: Fraction | None) -> Fraction:
            return own if own is not None else theirs if theirs is not None else Fraction(0)

        cells = self.per_request.keys() | other.per_request.keys()
        models = {m for m, _ in cells}
        mix = self.mix if self.mix is not None else other.mix or {}
        return _Factors(
            volume=pick(self.volume, other.volume),
            error_share=pick(self.error_share, other.error_share),
            error_cost=pick(self.error_cost, other.error_cost),
            mix={m: mix.get(m, Fraction(0)) for m in models},
            per_request={c: pick(self.per_request.get(c), other.per_request.get(c)) for c in cells},
            unit_cost={c: pick(self.unit_cost.get(c), other.unit_cost.get(c)) for c in cells},
        )

    def cost_per_min(self) -> Fraction:
        assert self.volume is not None and self.error_share is not None
        assert self.error_cost is not None and self.mix is not None
        by_model: dict[str, Fraction] = {}
        for cell, units in self.per_request.items():
            price = self.unit_cost[cell]
            assert units is not None and price is not None
            by_model[cell[0]] = by_model.get(cell[0], Fraction(0)) + units * price
        served = sum((self.mix[m] * c for m, c in by_model.items()), Fraction(0))
        share = self.error_share
        return self.volume * ((1 - share) * served + share * self.error_cost)


def _usd(value: Fraction) -> Decimal:
    return Decimal(round(value * 10**_USD_PLACES)).scaleb(-_USD_PLACES)


@dataclass(slots=True)
class _Change:
    baseline: Decimal
    current: Decimal
    volume: Decimal
    errors: Decimal
    model_mix: Decimal
    tokens_per_request: dict[str, Decimal]
    price: Decimal

    @property
    def total(self) -> Decimal:
        return self.current - self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {
            "volume": _text(self.volume),
            "errors": _text(self.errors),
            "model_mix": _text(self.model_mix),
            "tokens_per_request": {c: _text(v) for c, v in self.tokens_per_request.items()},
            "price": _text(self.price),
        }

    def cause(self, baseline: _Profile, current: _Profile, signal: Sequence[str]) -> str:
        """The change's cause in words: the part of the paging signal that raised cost most
        (a page for input tokens names input tokens, even when output, 4x the price per token,
        happened to rise more in USD in a small window), else the part that raised cost most
        (or, when cost did not rise, moved it most)."""
        parts = _parts_of(self)
        rises = [name for name in signal if parts[name] > 0]
        if rises:
            part = max(rises, key=lambda n: parts[n])
            words = self._words(baseline, current)[part]
            return f"of which {words}: {_signed_usd(parts[part])}/min"
        part, words = self.driver(baseline, current)
        return f"biggest {'increase' if parts[part] > 0 else 'change'}: {words}"

    def driver(self, baseline: _Profile, current: _Profile) -> tuple[str, str]:
        """The part that raised cost most (or, when cost did not rise, moved it most): its name
        in the decomposition and in words."""
        parts = _parts_of(self)
        rises = [name for name, part in parts.items() if part > 0] if self.total > 0 else []
        name = max(rises or parts, key=lambda n: abs(parts[n]))
        return name, self._words(baseline, current)[name]

    @staticmethod
    def _words(baseline: _Profile, current: _Profile) -> dict[str, str]:
        """Each part of the decomposition in words, with its factor's ratio where it has one."""
        volume = _ratio_of(current.requests * baseline.seconds, baseline.requests * current.seconds)
        words = {
            "volume": f"call volume (x{volume})",
            "errors": "errors",
            "model_mix": "model mix",
            "price": "prices",
        }
        base_ok, cur_ok = baseline.ok, current.ok
        for name in TOKEN_CLASSES:
            i = TOKEN_CLASSES.index(name)
            before = sum(t.tokens[i] for t in baseline.models.values())
            after = sum(t.tokens[i] for t in current.models.values())
            ratio = _ratio_of(after * base_ok, before * cur_ok)
            words[f"tokens_per_request.{name}"] = (
                f"{name.replace('_', ' ')} tokens per request (x{ratio})"
            )
        return words


def _parts_of(change: _Change) -> dict[str, Decimal]:
    """Every part of a change, token classes as "tokens_per_request.<class>"."""
    parts = {
        "volume": change.volume,
        "errors": change.errors,
        "model_mix": change.model_mix,
        "price": change.price,
    }
    for name, part in change.tokens_per_request.items():
        parts[f"tokens_per_request.{name}"] = part
    return parts


def _decompose(baseline: _Profile, current: _Profile) -> _Change:
    """Sequential substitution: swap the baseline's factors for the current ones in a fixed
    order; each part is the step's change in (rounded) cost per minute, so they telescope."""
    raw_base, raw_cur = _Factors.of(baseline), _Factors.of(current)
    base, cur = raw_base.filled(raw_cur), raw_cur.filled(raw_base)
    step = _Factors(
        base.volume,
        base.error_share,
        base.error_cost,
        base.mix,
        dict(base.per_request),
        dict(base.unit_cost),
    )
    levels = [_usd(step.cost_per_min())]

    def advance() -> Decimal:
        levels.append(_usd(step.cost_per_min()))
        return levels[-1] - levels[-2]

    step.volume = cur.volume
    volume = advance()
    step.error_share, step.error_cost = cur.error_share, cur.error_cost
    errors = advance()
    step.mix = cur.mix
    model_mix = advance()
    tokens: dict[str, Decimal] = {}
    for name in TOKEN_CLASSES:
        for cell in step.per_request:
            if cell[1] == name:
                step.per_request[cell] = cur.per_request[cell]
        tokens[name] = advance()
    step.per_request = dict(cur.per_request)  # per-call units: only change with the price
    step.unit_cost = dict(cur.unit_cost)
    price = advance()
    return _Change(levels[0], levels[-1], volume, errors, model_mix, tokens, price)


# --- formatting ------------------------------------------------------------------------------


def _text(amount: Decimal) -> str:
    """A fixed-point string without trailing zeros ("0.42", "3", "-0.0000015")."""
    if not amount:
        return "0"
    return format(amount.normalize(), "f")


def _fixed(value: Fraction, places: int) -> str:
    return format(Decimal(round(value * 10**places)).scaleb(-places), "f")


def _ratio_of(numerator: Fraction | int, denominator: Fraction | int) -> str:
    if not denominator:
        return "new"
    return _fixed(Fraction(numerator) / Fraction(denominator), 1)


def _ratio_text(current: Decimal, baseline: Decimal) -> str:
    return f"{_ratio_of(Fraction(current), Fraction(baseline))}x" if baseline else "new vs $0"


def _signed_usd(amount: Decimal) -> str:
    sign = "+" if amount >= 0 else "-"
    size = abs(amount)
    shown = size.quantize(Decimal("0.01") if size >= Decimal("0.01") else Decimal("0.000001"))
    return f"{sign}${shown}"


def _describe(p: _Profile, cost_per_min: Decimal) -> dict[str, Any]:
    ok = p.ok
    tokens = [sum(t.tokens[i] for t in p.models.values()) for i in range(len(TOKEN_CLASSES))]
    total_input = sum(tokens[:4])
    minutes = p.seconds / 60
    return {
        "cost_usd_per_min": _text(cost_per_min),
        "requests_per_min": _fixed(Fraction(p.requests) / minutes, 2),
        "cost_usd_per_request": (
            _text(_usd(Fraction(p.cost) / p.requests)) if p.requests else None
        ),
        "tokens_per_request": {
            name: _fixed(Fraction(count, ok), 1) if ok else "0"
            for name, count in zip(TOKEN_CLASSES, tokens, strict=True)
        },
        "cache_hit_rate": _fixed(Fraction(tokens[1], total_input), 4) if total_input else None,
        "error_rate": _fixed(Fraction(p.errors, p.requests), 4) if p.requests else None,
        "fallback_rate": _fixed(Fraction(p.fallbacks, ok), 4) if ok else None,
        "model_mix": {
            m: _fixed(Fraction(t.requests, ok), 4) for m, t in sorted(p.models.items()) if ok
        },
    }


def _profile_headline(kind: AnomalyKind, baseline: _Profile, current: _Profile) -> str:
    """What changed, from the profiles, for a kind named after a spend spike's cause."""
    if kind == "model_mix_shift" and baseline.ok and current.ok:

        def share(p: _Profile, model: str) -> Fraction:
            tally = p.models.get(model)
            return Fraction(tally.requests if tally else 0, p.ok)

        grown = max(current.models, key=lambda m: share(current, m) - share(baseline, m))
        was, now = (_fixed(share(p, grown) * 100, 0) for p in (baseline, current))
        return f"{grown} {was}% -> {now}% of calls"
    if kind == "cache_hit_drop":
        rates = [_describe(p, _ZERO)["cache_hit_rate"] for p in (baseline, current)]
        if None not in rates:
            was, now = (_fixed(Fraction(r) * 100, 0) for r in rates)
            return f"cache hit rate {was}% -> {now}%"
    return ""


def _seconds(span: timedelta) -> Fraction:
    return Fraction(span // timedelta(microseconds=1), 10**6) or Fraction(1, 10**6)


def _label(key: Key) -> str:
    tenant, feature, version, model = key
    if model is not None:
        return f"{tenant} model {model}"
    where = f"{tenant}/{feature}" if feature is not None else tenant
    return f"{where} prompt {version}" if version is not None else where


def _duration_text(span: timedelta) -> str:
    minutes, seconds = divmod(int(span.total_seconds()), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def load_anomaly_config(path: Path) -> AnomalyConfig:
    """The detector's settings from `anomaly.yaml` in the config dir (defaults when absent)."""
    if not path.exists():
        return AnomalyConfig()
    try:
        return AnomalyConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"invalid anomaly settings {path}: {exc}") from exc
