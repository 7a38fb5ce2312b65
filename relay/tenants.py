"""Relay keys -> tenants. Keys are stored as SHA-256 hashes; a plaintext key is never kept."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenops.errors import ConfigError

TENANT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass(frozen=True)
class Caller:
    tenant: str
    key_id: str
    allowed_models: frozenset[str] | None = None
    """None: every catalog model; otherwise only these names (or aliases)."""
    allowed_features: frozenset[str] | None = None


class _Key(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    models: list[str] | None = None
    features: list[str] | None = None


class _Tenant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=TENANT_ID.pattern)
    name: str | None = None
    keys: list[_Key] = []


class _TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenants: list[_Tenant]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class TenantDirectory:
    def __init__(self, callers_by_hash: dict[str, Caller], names: dict[str, str]) -> None:
        self._by_hash = callers_by_hash
        self.names = names

    @classmethod
    def load(cls, path: Path) -> TenantDirectory:
        try:
            parsed = _TenantsFile.model_validate(yaml.safe_load(path.read_text()))
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"invalid tenants file {path}: {exc}") from exc
        by_hash: dict[str, Caller] = {}
        for tenant in parsed.tenants:
            for key in tenant.keys:
                by_hash[key.sha256] = Caller(
                    tenant=tenant.id,
                    key_id=key.id,
                    allowed_models=None if key.models is None else frozenset(key.models),
                    allowed_features=None if key.features is None else frozenset(key.features),
                )
        return cls(by_hash, {t.id: t.name or t.id for t in parsed.tenants})

    def authenticate(self, key: str) -> Caller | None:
        return self._by_hash.get(hash_key(key))
