"""The model catalog: a model name or alias -> ordered provider targets.

A provider is real only when its API key is in the environment (and simulation is not forced);
otherwise it is served by the simulated provider, so the pipeline runs offline with real model
names and real prices. Keys are held as SecretStr and never logged or published.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from tokenops.errors import ConfigError
from tokenops.settings import Settings
from tokenops.simulated_provider import PROVIDERS as SIMULATED_DIALECTS


@dataclass(frozen=True)
class Target:
    provider: str
    model: str
    base_url: str
    api_key: SecretStr | None
    simulated: bool


class _Provider(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: str
    api_key_env: str | None = None


class _TargetRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str
    model: str


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    providers: dict[str, _Provider]
    models: dict[str, list[_TargetRef]]


class ModelCatalog:
    def __init__(self, routes: dict[str, tuple[Target, ...]]) -> None:
        self._routes = routes

    @classmethod
    def load(cls, path: Path, settings: Settings) -> ModelCatalog:
        try:
            parsed = _CatalogFile.model_validate(yaml.safe_load(path.read_text()))
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"invalid model catalog {path}: {exc}") from exc
        routes: dict[str, tuple[Target, ...]] = {}
        for name, refs in parsed.models.items():
            if not refs:
                raise ConfigError(f"model catalog {path}: model {name!r} has no targets")
            targets = []
            for ref in refs:
                provider = parsed.providers.get(ref.provider)
                if provider is None:
                    raise ConfigError(
                        f"model catalog {path}: model {name!r} names unknown provider "
                        f"{ref.provider!r}"
                    )
                targets.append(_target(ref, provider, settings))
            routes[name] = tuple(targets)
        return cls(routes)

    def resolve(self, model: str) -> tuple[Target, ...] | None:
        return self._routes.get(model)

    @property
    def model_names(self) -> list[str]:
        return sorted(self._routes)


def simulated_base_url(settings: Settings, provider: str) -> str:
    """The simulator speaks each known provider's dialect under its own path prefix, and the
    OpenAI dialect at /v1 for any other provider."""
    prefix = f"/{provider}" if provider in SIMULATED_DIALECTS else ""
    return f"{settings.simulator_url}{prefix}/v1"


def _target(ref: _TargetRef, provider: _Provider, settings: Settings) -> Target:
    key = os.environ.get(provider.api_key_env) if provider.api_key_env else None
    simulated = settings.simulate == "always" or (settings.simulate == "auto" and not key)
    return Target(
        provider=ref.provider,
        model=ref.model,
        base_url=(
            simulated_base_url(settings, ref.provider) if simulated else provider.base_url
        ).rstrip("/"),
        api_key=None if simulated or not key else SecretStr(key),
        simulated=simulated,
    )
