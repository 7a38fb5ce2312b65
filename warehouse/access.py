"""Who may read the warehouse (query API and dashboard), and which tenants they see.

People log in with a name and password (`/login`, a signed session cookie); programs send
`Authorization: Bearer <API token>`. Both are defined in `CONFIG_DIR/access.yaml`: passwords as
scrypt hashes, tokens as SHA-256 hashes, never in plaintext. Relay keys (tenants.yaml) open the
relay only: here they are unknown tokens.

Guarantees: every route but `/healthz`, `/login`, `/logout` and static assets depends on
`ViewerDep` or `AdminDep` (the dashboard page instead redirects a stranger to `/login`), and
every query is limited to `Viewer.scope(...)`. Failure is closed:
without access.yaml, with a bad or expired cookie, an unknown token or a user removed from the
file, a request is a 401; a tenant outside the viewer's set is a 403. The cookie carries only the
user's name and a fingerprint of their password hash: tenants come from access.yaml (read when
the service starts), so after a restart a changed user sees what the file now says, and a removed
user or a changed password ends the session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from fastapi import Depends, HTTPException, Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from relay.tenants import TENANT_ID
from tokenops.errors import ConfigError
from tokenops.settings import Settings

log = logging.getLogger("tokenops.warehouse.access")

SESSION_COOKIE = "tokenops_session"
SESSION_MAX_AGE_S = 12 * 3600
"""A session lasts 12 hours from login; then the dashboard asks for the password again."""


@dataclass(frozen=True)
class Viewer:
    name: str
    tenants: frozenset[str] | None
    """None: every tenant."""

    @property
    def sees_everything(self) -> bool:
        return self.tenants is None

    def scope(self, tenant: str | None) -> frozenset[str] | None:
        """The tenants a query may read, given the tenant it asked for (None: all it may see).
        Asking for a tenant outside the viewer's set is a 403."""
        if tenant is None:
            return self.tenants
        if not self.may_see(tenant):
            raise HTTPException(403, f"{self.name} may not see tenant {tenant}")
        return frozenset({tenant})

    def may_see(self, tenant: str | None) -> bool:
        """Whether rows of `tenant` are visible; None (organisation-wide) only to a viewer who
        sees every tenant."""
        if self.tenants is None:
            return True
        return tenant is not None and tenant in self.tenants


# --- passwords and tokens ----------------------------------------------------------------------

_SCRYPT = (2**14, 8, 1)
"""n, r, p: about 16 MiB and 50 ms per check."""
_SCRYPT_MAXMEM = 256 * 1024 * 1024
"""The most memory a stored hash may ask for (128 x n x r bytes)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$n$r$p$salt$hash`, the form access.yaml stores (salt and hash base64url)."""
    n, r, p = _SCRYPT
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def _parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    scheme, n, r, p, salt, digest = stored.split("$")
    if scheme != "scrypt":
        raise ValueError(f"unknown password scheme {scheme!r}")
    cost, block, parallel = int(n), int(r), int(p)
    if cost < 2 or cost & (cost - 1) or block < 1 or not 1 <= parallel <= 16:
        raise ValueError("scrypt n must be a power of 2, r at least 1 and p 1 to 16")
    if 129 * cost * block > _SCRYPT_MAXMEM:
        raise ValueError(f"scrypt n x r asks for more than {_SCRYPT_MAXMEM // 2**20} MiB")
    salt_bytes, digest_bytes = _unb64(salt), _unb64(digest)
    if len(salt_bytes) < 8 or len(digest_bytes) < 16:
        raise ValueError("the salt or the hash is too short")
    return cost, block, parallel, salt_bytes, digest_bytes


def verify_password(password: str, stored: str) -> bool:
    n, r, p, salt, digest = _parse_hash(stored)
    found = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=_SCRYPT_MAXMEM
    )
    return hmac.compare_digest(found, digest)


@cache
def _decoy_hash() -> str:
    """Checked for unknown user names, so a login takes as long whether or not the name exists."""
    return hash_password(secrets.token_urlsafe(16))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return f"tko-{secrets.token_urlsafe(32)}"


# --- access.yaml -------------------------------------------------------------------------------

Tenants = Literal["all"] | list[Annotated[str, Field(pattern=TENANT_ID.pattern)]]


class _User(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    password_hash: str
    tenants: Tenants

    @field_validator("password_hash")
    @classmethod
    def _scrypt(cls, value: str) -> str:
        try:
            _parse_hash(value)
        except ValueError as exc:
            raise ValueError(
                f"not a password hash from `tokenops access hash-password` ({exc})"
            ) from None
        return value


class _Token(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tenants: Tenants


class _AccessFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[_User] = []
    tokens: list[_Token] = []


def _tenants(value: Literal["all"] | list[str]) -> frozenset[str] | None:
    return None if value == "all" else frozenset(value)


@dataclass(frozen=True)
class _Login:
    password_hash: str
    tenants: frozenset[str] | None


class AccessBook:
    """The users and API tokens of access.yaml. `configured` is False when the file is absent:
    then nobody is let in."""

    def __init__(
        self,
        users: dict[str, _Login],
        tokens: list[tuple[str, Viewer]],
        configured: bool = True,
    ) -> None:
        self._users = users
        self._tokens = tokens
        self.configured = configured

    @classmethod
    def load(cls, path: Path, tenants: Iterable[str] | None = None) -> AccessBook:
        """The file at `path` (absent: nobody is let in); `tenants`, when given, are the known
        tenant ids, and naming another one is logged (it opens nothing)."""
        if not path.exists():
            log.warning(
                "no %s: the query API and dashboard refuse every request (401) until it exists",
                path,
            )
            return cls({}, [], configured=False)
        try:
            parsed = _AccessFile.model_validate(yaml.safe_load(path.read_text()) or {})
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"invalid access file {path}: {exc}") from exc
        names = [u.name for u in parsed.users] + [t.name for t in parsed.tokens]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"invalid access file {path}: names used twice: {repeated}")
        book = cls(
            {u.name: _Login(u.password_hash, _tenants(u.tenants)) for u in parsed.users},
            [(t.sha256, Viewer(t.name, _tenants(t.tenants))) for t in parsed.tokens],
        )
        unknown = book.tenants_named() - set(tenants) if tenants is not None else set()
        if unknown:
            log.warning("%s names tenants not in tenants.yaml: %s", path, sorted(unknown))
        return book

    def token_viewer(self, token: str) -> Viewer | None:
        digest = hash_token(token)
        found = None
        for stored, viewer in self._tokens:  # every entry compared: no early exit to time
            if hmac.compare_digest(digest, stored):
                found = viewer
        return found

    def login(self, name: str, password: str) -> Viewer | None:
        user = self._users.get(name)
        if user is None:
            verify_password(password, _decoy_hash())
            return None
        if not verify_password(password, user.password_hash):
            return None
        return Viewer(name, user.tenants)

    def user_viewer(self, name: str, fingerprint: str) -> Viewer | None:
        """The viewer of a session, if the user still exists with the password it logged in
        with (changing a password ends its sessions)."""
        user = self._users.get(name)
        if user is None or not hmac.compare_digest(fingerprint, _fingerprint(user.password_hash)):
            return None
        return Viewer(name, user.tenants)

    def fingerprint(self, name: str) -> str:
        return _fingerprint(self._users[name].password_hash)

    def tenants_named(self) -> set[str]:
        named = {t for u in self._users.values() for t in u.tenants or ()}
        return named | {t for _, v in self._tokens for t in v.tenants or ()}


def _fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


# --- sessions ----------------------------------------------------------------------------------


def session_secret(settings: Settings) -> str:
    """TOKENOPS_SESSION_SECRET, else a random secret kept in DATA_DIR/session.key (mode 0600),
    created on first use, so a restart keeps everyone logged in."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value()
    path = settings.data_dir / "session.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text().strip()
        if len(secret) < 32:
            raise ConfigError(f"{path} holds no usable session secret; delete it") from None
        return secret
    secret = secrets.token_hex(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret


class Sessions:
    """Signed, timestamped session cookies (itsdangerous): the user name and a fingerprint of
    their password hash; expired or tampered cookies are ignored."""

    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="tokenops-session")

    def start(self, response: Response, request: Request, book: AccessBook, name: str) -> None:
        value = self._serializer.dumps({"user": name, "pw": book.fingerprint(name)})
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=SESSION_MAX_AGE_S,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )

    def viewer(self, cookie: str, book: AccessBook) -> Viewer | None:
        try:
            data = self._serializer.loads(cookie, max_age=SESSION_MAX_AGE_S)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict):
            return None
        name, fingerprint = data.get("user"), data.get("pw")
        if not isinstance(name, str) or not isinstance(fingerprint, str):
            return None
        return book.user_viewer(name, fingerprint)

    @staticmethod
    def end(response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")


# --- dependencies ------------------------------------------------------------------------------


def authenticated(request: Request) -> Viewer | None:
    """The viewer a request's bearer token or session cookie names, else None. A request that
    sends a bearer token is judged by it alone."""
    book: AccessBook | None = getattr(request.app.state, "access", None)
    if book is None or not book.configured:
        return None
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return book.token_viewer(token.strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    sessions: Sessions | None = getattr(request.app.state, "sessions", None)
    if cookie is None or sessions is None:
        return None
    return sessions.viewer(cookie, book)


def current_viewer(request: Request) -> Viewer:
    viewer = authenticated(request)
    if viewer is None:
        book: AccessBook | None = getattr(request.app.state, "access", None)
        detail = (
            "log in at /login, or send Authorization: Bearer <an API token from access.yaml>"
            if book is not None and book.configured
            else "access is not configured: the warehouse needs CONFIG_DIR/access.yaml"
        )
        raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
    return viewer


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


def admin_viewer(viewer: ViewerDep) -> Viewer:
    """For records that span tenants (ingest, quarantine, snapshots, loader status) and for
    organisation-wide budgets."""
    if not viewer.sees_everything:
        raise HTTPException(403, f"{viewer.name} may not see every tenant")
    return viewer


AdminDep = Annotated[Viewer, Depends(admin_viewer)]
