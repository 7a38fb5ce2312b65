"""Usage events decoded and priced as columns: how the loader keeps up with a backlog.

Decoding and pricing one event at a time in Python costs ~65 µs; a backlog of millions would
take hours. Here a micro-batch of usage records never touches Python row by row: DuckDB parses
the JSON payloads, checks them against the event contract and prices them by joining the rate
choices the Pricer resolved once per (model, tenant, service tier, price segment of a UTC day).
The integer arithmetic is `Pricer.price`'s: atto-units per token times tokens, FX rounded half
to even at the atto scale, per token class.

The path is deliberately narrow. It takes a record only in the shape tokenops itself writes
(the event read back and written the way `UsageEvent.to_wire` writes it is the record, byte for
byte; no usage_error, no pricing fields yet) whose call has a price. Every other
record is handed back, and the per-record path (the pydantic contract and `Pricer.price_event`)
decides and explains. So the contract stays the one definition of a valid event, and both paths
write the same row for the same payload (tests/ingest/test_usage_batch.py checks it).
Provider usage kept for audit is re-derived with `ingest.token_usage` in Python, the one place
that knows each provider's semantics; only those records pay for it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import duckdb
import numpy as np
import pyarrow as pa
from aiokafka.structs import ConsumerRecord

from ingest.price_book import TOKEN_CLASSES
from ingest.pricing import Pricer
from ingest.token_usage import UsageMismatch, tokens_from_usage
from ingest.usage_event import UsageEvent

Record: TypeAlias = ConsumerRecord[bytes, bytes]

MAX_TOKENS = 10**12
"""Larger token counts (a bug, or a very odd provider) are priced one by one."""
MAX_NESTING = 100
"""Raw usage with more objects and arrays than this (a bomb, not a provider's usage) is judged
one by one; pydantic's JSON reader refuses nesting past 200 levels."""
HUGEINT_LIMIT = 2**126
"""Rates whose largest product (every class at MAX_TOKENS, times the FX numerator) could come
near DuckDB's 128-bit integers are priced one by one, in Python's unbounded integers."""


PRICING_FIELDS = (
    "price_status",
    "unpriced_reason",
    "price_version_id",
    "billing_currency",
    "cost_billed",
    "fx_rate",
    "cost_usd",
    "cost_by_class",
)

_STRUCTURE: dict[str, object] = {
    "schema_version": "BIGINT",
    "event_id": "VARCHAR",
    "event_time": "VARCHAR",
    "tenant": "VARCHAR",
    "relay_key_id": "VARCHAR",
    "feature": "VARCHAR",
    "prompt_version": "VARCHAR",
    "end_user": "VARCHAR",
    "tags": ["VARCHAR"],
    "endpoint": "VARCHAR",
    "requested_model": "VARCHAR",
    "served_model": "VARCHAR",
    "provider": "VARCHAR",
    "provider_model": "VARCHAR",
    "attempt": "BIGINT",
    "fallback_reason": "VARCHAR",
    "service_tier": "VARCHAR",
    "streamed": "BOOLEAN",
    "latency_ms": "BIGINT",
    "tokens": {name: "BIGINT" for name in TOKEN_CLASSES},
    "usage_source": "VARCHAR",
    "raw_usage": "JSON",
    "usage_error": "JSON",
    "outcome": "VARCHAR",
    "http_status": "BIGINT",
    "error_code": "VARCHAR",
    "price_status": "VARCHAR",
    **{name: "JSON" for name in PRICING_FIELDS[1:]},
}
"""How DuckDB reads each field of UsageEvent, in its order (a test checks they are its fields)."""


class _Sql(str):
    """A piece of SQL among pieces of literal text."""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _value_pieces(name: str, kind: object) -> list[str]:
    """A field's value as pydantic writes it: literal text and `_Sql` expressions."""
    column = f"e.{name}"
    if name == "event_time":
        # microsecond() counts from the minute; %f writes six digits
        return [
            '"',
            _Sql(
                "CASE WHEN microsecond(event_at) % 1000000 = 0"
                " THEN strftime(event_at, '%Y-%m-%dT%H:%M:%S')"
                " ELSE strftime(event_at, '%Y-%m-%dT%H:%M:%S.%f') END"
            ),
            'Z"',
        ]
    if kind == "VARCHAR":
        return ['"', _Sql(column), '"']
    if kind == ["VARCHAR"]:
        return [
            "[",
            _Sql(  # no lambda for the usual empty list
                f"CASE WHEN len({column}) = 0 THEN '' ELSE"
                f" array_to_string(list_transform({column}, lambda t: '\"' || t || '\"'), ',') END"
            ),
            "]",
        ]
    if isinstance(kind, dict):
        pieces: list[str] = ["{"]
        for i, n in enumerate(kind):
            pieces += [f'{"," if i else ""}"{n}":', _Sql(f"{column}.{n}")]
        return [*pieces, "}"]
    return [_Sql(column)]  # numbers and booleans as DuckDB writes them; JSON as read


def _arguments(pieces: list[str]) -> list[str]:
    """SQL arguments for `pieces`, adjacent literal text joined into one literal."""
    args: list[str] = []
    text = ""
    for piece in pieces:
        if isinstance(piece, _Sql):
            if text:
                args.append(_literal(text))
                text = ""
            args.append(piece)
        else:
            text += piece
    return [*args, _literal(text)] if text else args


def _render_sql() -> str:
    """SQL for the event in `e` written the way `UsageEvent.to_wire` writes it: fields in
    order, a field that is None left out (the pricing fields, None in every record taken, are
    not written at all). One `concat` of literal and value pieces (it skips NULL pieces); a
    field that may be None is one piece joined with `||`, so a NULL value drops its name too."""
    pieces: list[str] = ["{"]
    for i, (name, kind) in enumerate(_STRUCTURE.items()):
        if name in PRICING_FIELDS[1:]:
            continue  # NULL in every record taken (DECODE requires it), so never written
        field = UsageEvent.model_fields[name]
        own = [f'{"," if i else ""}"{name}":', *_value_pieces(name, kind)]
        if not field.is_required() and field.default is None:
            pieces.append(_Sql("(" + " || ".join(_arguments(own)) + ")"))
        else:
            pieces += own
    return "concat(" + ", ".join(_arguments([*pieces, "}"])) + ")"


def _decode_sql() -> str:
    """A record is taken when the event DuckDB read from it, written back the way pydantic
    writes events (`UsageEvent.to_wire`), is the record itself, byte for byte. That one
    comparison refuses unknown or repeated keys, values of another JSON type (DuckDB's reader
    converts leniently; writing back shows it), other key orders, escapes and UTC offsets. The
    constraints a type does not carry (lengths, bounds, literals) are tested one by one."""
    render = _render_sql()
    tokens = ", ".join(f"e.tokens.{n} AS {n}_tokens" for n in TOKEN_CLASSES)
    token_bounds = " AND ".join(f"e.tokens.{n} BETWEEN 0 AND {MAX_TOKENS}" for n in TOKEN_CLASSES)
    unpriced = " AND ".join(f"e.{n} IS NULL" for n in PRICING_FIELDS[1:])
    required = " AND ".join(
        f"e.{n} IS NOT NULL" for n, f in UsageEvent.model_fields.items() if f.is_required()
    )
    return f"""
    CREATE OR REPLACE TEMP TABLE decoded AS
    WITH read AS (
        -- Not JSON: no event (try); JSON but not an object: no field (the comparison fails).
        SELECT position, value, try(from_json(value, '{json.dumps(_STRUCTURE)}')) AS e
        FROM payloads
        WHERE NOT contains(value, '\\')
    ),
    timed AS (
        SELECT *, TRY_CAST(e.event_time AS TIMESTAMPTZ) AS event_at FROM read
    )
    SELECT position,
           e.event_id, event_at AS event_time, e.tenant, e.relay_key_id, e.feature,
           e.prompt_version, e.end_user, coalesce(e.tags, []) AS tags, e.endpoint,
           e.requested_model, e.served_model, e.provider, e.provider_model, e.attempt,
           e.fallback_reason, e.service_tier, e.streamed, e.latency_ms, {tokens},
           e.usage_source, e.raw_usage, e.outcome, e.http_status, e.error_code,
           coalesce(
               event_at BETWEEN TIMESTAMPTZ '2000-01-01 00:00:00+00'
                      AND TIMESTAMPTZ '2200-01-01 00:00:00+00'
               AND e.schema_version = 1
               AND length(e.event_id) BETWEEN 1 AND 64 AND length(e.tenant) BETWEEN 1 AND 128
               AND e.attempt BETWEEN 1 AND 2147483647 AND e.latency_ms BETWEEN 0 AND 2147483647
               AND {token_bounds}
               AND e.usage_source IN ('provider', 'estimated', 'partial', 'none')
               AND e.outcome IN ('ok', 'upstream_error', 'timeout', 'connection_error',
                                 'cancelled')
               AND e.price_status = 'pending' AND e.usage_error IS NULL AND {unpriced}
               AND {required}
               AND coalesce(e.service_tier <> '', true)
               AND coalesce(json_type(e.raw_usage) = 'OBJECT'
                   AND length(e.raw_usage) - length(replace(replace(e.raw_usage, '{{', ''),
                                                            '[', '')) < {MAX_NESTING}, true)
               AND coalesce(e.http_status BETWEEN -2147483648 AND 2147483647, true)
               AND {render} = value,
               false) AS fast
    FROM timed
    """


DECODE = _decode_sql()

_INPUT_CLASSES = ("input_uncached", "cache_read", "cache_write", "cache_write_1h")

MACROS = """
CREATE OR REPLACE TEMP MACRO to_usd(a, currency, num, den) AS
    CASE WHEN currency = 'USD' THEN a
         ELSE (a * num) // den + CASE
             WHEN 2 * ((a * num) % den) > den
               OR (2 * ((a * num) % den) = den AND ((a * num) // den) % 2 = 1) THEN 1 ELSE 0 END
    END;
CREATE OR REPLACE TEMP MACRO money(a) AS
    a::DECIMAL(38, 0) * 0.000000000000000001::DECIMAL(18, 18);
"""
"""`to_usd` is `ingest.pricing._convert` (half to even at the atto scale); `money` reads
atto-units as DECIMAL(38, 18)."""


def _sum(names: Sequence[str], prefix: str) -> str:
    return " + ".join(f"{prefix}{n}" for n in names)


_BY_CLASS = (
    "struct_pack("
    + ", ".join(
        [f"{n} := CASE WHEN t_{n} > 0 THEN money(u_{n}) END" for n in TOKEN_CLASSES]
        + ["request := CASE WHEN fee > 0 THEN money(u_fee) END"]
    )
    + ")"
)
"""`cost_by_class` (warehouse.store.COST_BY_CLASS): a class's USD line when the call has tokens
of it, as `Cost.by_class_usd` lists it."""

_CHOICE_HOLDS = """
    r.provider = c.provider AND r.model = c.provider_model
    AND r.price_tenant = c.price_tenant AND r.service_tier = coalesce(c.service_tier, '')
    AND r.day = c.day AND c.event_time >= r.seg_start AND c.event_time < r.seg_end
    AND c.input_total >= r.min_input AND (r.max_input IS NULL OR c.input_total < r.max_input)
    AND c.output_total >= r.min_output AND (r.max_output IS NULL OR c.output_total < r.max_output)
"""

PRICE = f"""
WITH choice_rates AS (
    SELECT * REPLACE ({", ".join(f"r_{n}::HUGEINT AS r_{n}" for n in TOKEN_CLASSES)},
                      fee::HUGEINT AS fee, fx_num::HUGEINT AS fx_num, fx_den::HUGEINT AS fx_den)
    FROM choices
),
calls AS (
    SELECT d.*,
           {_sum([f"{n}_tokens" for n in _INPUT_CLASSES], "d.")} AS input_total,
           d.output_tokens + d.reasoning_tokens AS output_total,
           CAST(d.event_time AT TIME ZONE 'UTC' AS DATE) AS day,
           CASE WHEN m.by_tenant THEN d.tenant ELSE '' END AS price_tenant
    FROM decoded d JOIN models m ON m.provider = d.provider AND m.model = d.provider_model
    WHERE d.fast AND d.position NOT IN (SELECT position FROM usage_refused)
),
chosen AS (
    -- A day of a model with one way to price it (no tiers, no price change that day) needs no
    -- ranking; the others take the first choice that holds, as Pricer.price does.
    SELECT c.*, r.* EXCLUDE (provider, model, price_tenant, service_tier, day, alone)
    FROM calls c JOIN choice_rates r ON {_CHOICE_HOLDS}
    WHERE r.alone
    UNION ALL
    SELECT c.*, r.* EXCLUDE (provider, model, price_tenant, service_tier, day, alone)
    FROM calls c JOIN choice_rates r ON {_CHOICE_HOLDS}
    WHERE NOT r.alone
    QUALIFY row_number() OVER (PARTITION BY c.position ORDER BY r.choice) = 1
),
lines AS (
    SELECT *, {", ".join(f"{n}_tokens::HUGEINT * r_{n} AS l_{n}" for n in TOKEN_CLASSES)},
           {", ".join(f"{n}_tokens AS t_{n}" for n in TOKEN_CLASSES)}
    FROM chosen
    WHERE NOT (input_only AND output_total > 0)
),
usd AS (
    SELECT *, {
    ", ".join(f"to_usd(l_{n}, currency, fx_num, fx_den) AS u_{n}" for n in TOKEN_CLASSES)
},
           to_usd(fee, currency, fx_num, fx_den) AS u_fee,
           CASE WHEN input_total = input_uncached_tokens THEN 0
                ELSE to_usd(input_total::HUGEINT * r_input_uncached, currency, fx_num, fx_den)
                     - ({_sum(_INPUT_CLASSES, "u_")}) END AS savings_atto
    FROM lines
)
SELECT position,
       event_id, 1 AS schema_version, event_time, tenant, relay_key_id, feature, prompt_version,
       end_user, tags, endpoint, requested_model, served_model, provider, provider_model,
       attempt, fallback_reason, service_tier, streamed, latency_ms,
       {", ".join(f"{n}_tokens" for n in TOKEN_CLASSES)},
       usage_source, raw_usage, NULL::VARCHAR AS usage_error, outcome, http_status, error_code,
       'priced' AS price_status, NULL::VARCHAR AS unpriced_reason, price_version_id,
       currency AS billing_currency,
       money(CASE WHEN currency = 'USD' THEN {_sum(TOKEN_CLASSES, "u_")} + u_fee
                  ELSE {_sum(TOKEN_CLASSES, "l_")} + fee END) AS cost_billed,
       CAST(fx_rate AS DECIMAL(38, 18)) AS fx_rate,
       money({_sum(TOKEN_CLASSES, "u_")} + u_fee) AS cost_usd,
       {_BY_CLASS} AS cost_by_class,
       money(savings_atto) AS cache_savings_usd
FROM usd
"""
"""Cache savings (`Pricer.cache_savings_usd`): every cached input token billed as uncached
input, minus the actual input lines, each line converted to USD on its own. Output, reasoning
and the request fee are the same in both and cancel."""


_CHOICE_SCHEMA = pa.schema(
    [
        ("provider", pa.string()),
        ("model", pa.string()),
        ("price_tenant", pa.string()),
        ("service_tier", pa.string()),
        ("day", pa.date32()),
        ("seg_start", pa.timestamp("us", tz="UTC")),
        ("seg_end", pa.timestamp("us", tz="UTC")),
        ("choice", pa.int32()),
        ("min_input", pa.int64()),
        ("max_input", pa.int64()),
        ("min_output", pa.int64()),
        ("max_output", pa.int64()),
        *[(f"r_{n}", pa.decimal128(38, 0)) for n in TOKEN_CLASSES],
        ("fee", pa.decimal128(38, 0)),
        ("price_version_id", pa.string()),
        ("currency", pa.string()),
        ("input_only", pa.bool_()),
        ("alone", pa.bool_()),
        ("fx_rate", pa.string()),
        ("fx_num", pa.decimal128(38, 0)),
        ("fx_den", pa.decimal128(38, 0)),
    ]
)


@dataclass
class StagedUsage:
    """A micro-batch's usage records split in two: `calls`, one row per record the columnar
    path decoded and priced (columns of table `calls` plus `position`, the record's index in
    the batch), and `rest`, the records the per-record path must judge."""

    calls: pa.Table
    rest: list[Record]


def _texts(records: Sequence[Record]) -> pa.Array:
    """The records' values as text: NULL for no value or bytes that are not UTF-8 (those go to
    the per-record path, which says why)."""
    values = pa.array([record.value for record in records], pa.binary())
    try:
        return values.cast(pa.string())  # validates UTF-8 in one pass
    except pa.ArrowInvalid:
        texts: list[str | None] = []
        for record in records:
            try:
                texts.append(None if record.value is None else record.value.decode())
            except UnicodeDecodeError:
                texts.append(None)
        return pa.array(texts, pa.string())


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key is repeated")
    return dict(pairs)


class UsageBatchPricer:
    """Decodes and prices usage records as columns in a private in-memory DuckDB."""

    def __init__(self, pricer: Pricer) -> None:
        self.pricer = pricer
        self._con = duckdb.connect(":memory:")
        self._con.execute("SET TimeZone = 'UTC'")
        self._con.execute(MACROS)

    def close(self) -> None:
        self._con.close()

    def stage(self, records: Sequence[Record]) -> StagedUsage:
        con = self._con
        payloads = pa.table(
            {"position": pa.array(range(len(records)), pa.int64()), "value": _texts(records)}
        )
        con.register("payloads", payloads)
        try:
            con.execute(DECODE)
        finally:
            con.unregister("payloads")
        con.register("usage_refused", pa.table({"position": self._refused_usage()}))
        con.register("models", self._models())
        con.register("choices", self._choices())
        try:
            # No table between, and no sort: rows come in DuckDB's order (`position` keeps the
            # batch order for whoever needs it; sorting whole rows cost ~1 µs per row).
            calls = con.sql(PRICE).to_arrow_table()
        finally:
            for name in ("usage_refused", "models", "choices"):
                con.unregister(name)
        taken = np.zeros(len(records), dtype=bool)
        taken[calls.column("position").to_numpy()] = True
        rest = [records[int(i)] for i in np.flatnonzero(~taken)]
        return StagedUsage(calls, rest)

    def _refused_usage(self) -> pa.Array:
        """Positions whose raw usage (kept for audit) the per-record path must judge: provider
        usage that does not give the event's token classes (it is quarantined with the
        provider's own numbers), and usage with a repeated key (pydantic keeps the last value,
        the stored JSON text would keep both)."""
        rows = self._con.execute(
            f"""SELECT position, endpoint, usage_source, raw_usage::VARCHAR,
                       {", ".join(f"{n}_tokens" for n in TOKEN_CLASSES)}
                FROM decoded
                WHERE fast AND raw_usage IS NOT NULL AND raw_usage::VARCHAR <> '{{}}'"""
        ).fetchall()
        refused = []
        for position, endpoint, source, raw, *counts in rows:
            try:
                usage = json.loads(raw, object_pairs_hook=_unique_keys)
                if source == "provider":
                    expected = tokens_from_usage(endpoint, usage)
                    if tuple(expected.__dict__.values()) != tuple(counts):
                        refused.append(position)
            except (UsageMismatch, ValueError, RecursionError):
                refused.append(position)
        return pa.array(refused, pa.int64())

    def _models(self) -> pa.Table:
        pairs = self._con.execute(
            "SELECT DISTINCT provider, provider_model FROM decoded WHERE fast"
        ).fetchall()
        return pa.table(
            {
                "provider": [p for p, _ in pairs],
                "model": [m for _, m in pairs],
                "by_tenant": [self.pricer.by_tenant(p, m) for p, m in pairs],
            }
        )

    def _choices(self) -> pa.Table:
        keys = self._con.execute(
            """SELECT DISTINCT d.provider, d.provider_model,
                      CASE WHEN m.by_tenant THEN d.tenant ELSE '' END,
                      coalesce(d.service_tier, ''),
                      CAST(d.event_time AT TIME ZONE 'UTC' AS DATE)
               FROM decoded d
               JOIN models m ON m.provider = d.provider AND m.model = d.provider_model
               WHERE d.fast"""
        ).fetchall()
        rows: dict[str, list[object]] = {name: [] for name in _CHOICE_SCHEMA.names}
        for provider, model, tenant, tier, day in keys:
            try:
                choices = self.pricer.rate_choices(
                    provider, model, day, tenant or None, tier or None
                )
            except ValueError:
                continue  # a price the pricer refuses: each call is quarantined with why
            if any(
                (max(rate for _, rate in c.rates) * len(TOKEN_CLASSES) * MAX_TOKENS + c.fee)
                * max(c.fx_numerator, c.fx_denominator)
                >= HUGEINT_LIMIT
                for c in choices
            ):
                continue  # the whole day, as dropping one choice could let a later one apply
            for c in choices:
                rates = dict(c.rates)
                values: dict[str, object] = {
                    "provider": provider,
                    "model": model,
                    "price_tenant": tenant,
                    "service_tier": tier,
                    "day": day,
                    "seg_start": c.start,
                    "seg_end": c.end,
                    "choice": c.order,
                    "min_input": c.min_input,
                    "max_input": c.max_input,
                    "min_output": c.min_output,
                    "max_output": c.max_output,
                    **{f"r_{n}": rates[n] for n in TOKEN_CLASSES},
                    "fee": c.fee,
                    "price_version_id": c.version.id,
                    "currency": c.version.currency,
                    "input_only": c.version.input_only,
                    "alone": len(choices) == 1,
                    "fx_rate": str(c.fx_rate),
                    "fx_num": c.fx_numerator,
                    "fx_den": c.fx_denominator,
                }
                for name, value in values.items():
                    rows[name].append(value)
        return pa.table(rows, schema=_CHOICE_SCHEMA)
