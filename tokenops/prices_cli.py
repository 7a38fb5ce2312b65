"""`tokenops prices`: inspect, check and add price versions."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated

import typer
from pydantic import ValidationError

from ingest.price_book import TOKEN_CLASSES, ClassRates, PriceVersion
from ingest.pricing import CATALOG_VERSION, Pricer
from ingest.topics import PRICE_VERSIONS
from relay.model_catalog import ModelCatalog
from tokenops.errors import ConfigError
from tokenops.settings import Settings, get_settings, load_pricer
from warehouse.queries import money

prices_app = typer.Typer(no_args_is_help=True, help="Inspect, check and add price versions.")


def _when(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(f"not a date or ISO time: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _targets(settings: Settings, model: str, provider: str | None) -> list[tuple[str, str]]:
    if provider:
        return [(provider, model)]
    catalog = ModelCatalog.load(settings.config_dir / "models.yaml", settings)
    routes = catalog.resolve(model)
    if routes is None:
        raise ConfigError(
            f"{model!r} is not in the model catalog; name its provider with --provider"
        )
    return [(target.provider, target.model) for target in routes]


def _describe(version: PriceVersion, pricer: Pricer, at: datetime) -> list[str]:
    fx = pricer.book.usd_per_unit(version.currency, at)
    lines = [
        f"  version   {version.id}",
        f"  source    {version.source}",
        f"  currency  {version.currency}"
        + (
            f" (1 {version.currency} = {fx} USD at {at.date()})"
            if version.currency != "USD"
            else ""
        ),
        (
            "  in force  per the genai-prices catalog at that time"
            if version.id.startswith(CATALOG_VERSION)
            else f"  in force  from {version.effective_from.date()}"
            + (f" to {version.effective_to.date()}" if version.effective_to else "")
        ),
    ]
    if version.tenant:
        lines.append(f"  tenant    {version.tenant}")
    if version.service_tier:
        lines.append(f"  tier      {version.service_tier}")
    lines.append("  per million tokens: " + _rates(version.per_million))
    for tier in version.tiers:
        bounds = f"input [{tier.min_input_tokens}, {tier.max_input_tokens or '∞'})"
        if tier.min_output_tokens or tier.max_output_tokens:
            bounds += f" output [{tier.min_output_tokens}, {tier.max_output_tokens or '∞'})"
        lines.append(f"  whole call when {bounds}: " + _rates(tier.per_million))
    for window in version.windows:
        lines.append(f"  {window.start}-{window.end} UTC: " + _rates(window.per_million))
    return lines


def _rates(rates: ClassRates) -> str:
    parts = [f"{name} {money(rates.per_million(name))}" for name in TOKEN_CLASSES]
    if rates.request:
        parts.append(f"per request {rates.request}")
    return ", ".join(parts)


@prices_app.command("show")
def show(
    model: Annotated[str, typer.Argument(help="catalog model name or alias, or a provider model")],
    at: Annotated[str | None, typer.Option(help="date or ISO time (default: now)")] = None,
    provider: Annotated[str | None, typer.Option(help="price MODEL at this provider")] = None,
    tenant: Annotated[str | None, typer.Option(help="show the tenant's contract price")] = None,
    service_tier: Annotated[str | None, typer.Option(help="batch, flex, priority")] = None,
) -> None:
    """Show the price in force for MODEL (each of its catalog targets) at a date."""
    settings = get_settings()
    pricer = load_pricer(settings)
    when = _when(at)
    for target_provider, target_model in _targets(settings, model, provider):
        typer.echo(f"{target_provider}/{target_model} at {when.isoformat()}")
        version = pricer.version(target_provider, target_model, when, tenant, service_tier)
        if version is None:
            typer.echo("  UNPRICED: no price in the own book or the catalog")
            continue
        for line in _describe(version, pricer, when):
            typer.echo(line)


@prices_app.command("check")
def check() -> None:
    """Compare the own book with genai-prices: differences, missing models, stale entries."""
    settings = get_settings()
    pricer = load_pricer(settings)
    catalog_only = Pricer()
    now = datetime.now(UTC)
    problems = 0
    for version in sorted(
        pricer.book.versions, key=lambda v: (v.provider, v.model, v.effective_from)
    ):
        label = f"{version.provider}/{version.model} ({version.id})"
        successor = pricer.book.find(
            version.provider, version.model, now, version.tenant, version.service_tier
        )
        if version.effective_to is not None and version.effective_to <= now and successor is None:
            typer.echo(f"stale    {label}: ended {version.effective_to.date()} with no successor")
            problems += 1
        listed = catalog_only.version(
            version.provider, version.model, now, None, version.service_tier
        )
        if listed is None:
            typer.echo(f"own only {label}: not in {listed or 'the genai-prices catalog'}")
            continue
        fx = pricer.book.usd_per_unit(version.currency, now) or Decimal(0)
        diffs = []
        for name in TOKEN_CLASSES:
            own = version.per_million.per_million(name) * fx
            theirs = listed.per_million.per_million(name)
            if own != theirs:
                diffs.append(f"{name} {money(own)} vs {money(theirs)} USD")
        if diffs:
            kind = "contract" if version.tenant else "differs "
            typer.echo(f"{kind} {label}: " + "; ".join(diffs))
    catalog = ModelCatalog.load(settings.config_dir / "models.yaml", settings)
    for name in catalog.model_names:
        for target in catalog.resolve(name) or ():
            if pricer.version(target.provider, target.model, now) is None:
                typer.echo(
                    f"missing  {name} -> {target.provider}/{target.model}: calls are unpriced"
                )
                problems += 1
    typer.echo(f"{problems} problem(s)")


def _amount(value: str | None, name: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation as exc:
        raise ConfigError(f"--{name} must be a decimal number, got {value!r}") from exc


@prices_app.command("add")
def add(
    provider: Annotated[str, typer.Option(help="provider id, e.g. openai, alibaba")],
    model: Annotated[str, typer.Option(help="the provider's model id")],
    input: Annotated[str, typer.Option(help="per million uncached input tokens")],
    output: Annotated[str, typer.Option(help="per million output tokens")],
    effective_from: Annotated[str, typer.Option(help="date the price applies from")],
    source: Annotated[str, typer.Option(help="where the price comes from")],
    currency: Annotated[str, typer.Option(help="billing currency")] = "USD",
    cache_read: Annotated[str | None, typer.Option(help="per million cache reads")] = None,
    cache_write: Annotated[str | None, typer.Option(help="per million 5 min cache writes")] = None,
    cache_write_1h: Annotated[str | None, typer.Option(help="per million 1 h cache writes")] = None,
    reasoning: Annotated[str | None, typer.Option(help="per million reasoning tokens")] = None,
    request: Annotated[str | None, typer.Option(help="fee per request")] = None,
    effective_to: Annotated[str | None, typer.Option(help="date the price ends")] = None,
    tenant: Annotated[str | None, typer.Option(help="a contract price for one tenant")] = None,
    service_tier: Annotated[str | None, typer.Option(help="batch, flex, priority")] = None,
) -> None:
    """Add a price version. The warehouse re-prices the calls it covers with correction rows."""
    settings = get_settings()
    rates = {
        "input": _amount(input, "input"),
        "output": _amount(output, "output"),
        "cache_read": _amount(cache_read, "cache-read"),
        "cache_write": _amount(cache_write, "cache-write"),
        "cache_write_1h": _amount(cache_write_1h, "cache-write-1h"),
        "reasoning": _amount(reasoning, "reasoning"),
        "request": _amount(request, "request") or Decimal(0),
    }
    try:
        version = PriceVersion(
            provider=provider,
            model=model,
            currency=currency,
            effective_from=_when(effective_from),
            effective_to=_when(effective_to) if effective_to else None,
            tenant=tenant,
            service_tier=service_tier,
            source=source,
            per_million=ClassRates(**{k: v for k, v in rates.items() if v is not None}),
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid price version: {exc.errors()[0]['msg']}") from exc
    pricer = load_pricer(settings)
    if not pricer.book.add(version):
        raise ConfigError(f"price version {version.id} already exists")
    if (
        version.currency != "USD"
        and pricer.book.usd_per_unit(version.currency, version.effective_from) is None
    ):
        raise ConfigError(f"no {version.currency}->USD rate from {version.effective_from.date()}")
    _append(settings, version)
    published = _publish(settings, version)
    typer.echo(f"added {version.id}")
    if not published:
        typer.echo(
            f"warning: Kafka at {settings.bootstrap} did not take it; running services apply it "
            "when they restart",
            err=True,
        )


def _append(settings: Settings, version: PriceVersion) -> None:
    path = settings.price_additions_path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, version.model_dump_json().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(settings: Settings, version: PriceVersion) -> bool:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        producer = KafkaProducer(
            bootstrap_servers=settings.bootstrap,
            acks="all",
            max_block_ms=5_000,
            bootstrap_timeout_ms=5_000,
        )
    except (KafkaError, OSError):
        return False
    try:
        future = producer.send(
            PRICE_VERSIONS, key=version.id.encode(), value=version.model_dump_json().encode()
        )
        producer.flush(timeout=10)
        return future.succeeded()
    finally:
        producer.close(timeout=2)
