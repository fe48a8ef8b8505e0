"""Bearer tokens of the case API and console: signed JWTs (HS256) carrying the user's id and role.

The signing key comes from `AUTH_JWT_SECRET`; when that is unset, from a key file that the first
process to need it creates (random, mode 0600), so a local stack and `second-opinion token` agree
without anyone choosing a secret. Only `supervisor` and `manager` may approve or deny.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import StackSettings

APPROVER_ROLES = frozenset({"supervisor", "manager"})
ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore")

    jwt_secret: SecretStr | None = Field(default=None, description="HS256 signing key (at least 32 bytes)")
    jwt_secret_file: Path = Field(
        default_factory=lambda: StackSettings().data_dir / "auth.secret", description="key file used when unset"
    )
    issuer: str = "second-opinion"
    audience: str = "second-opinion-console"


class AuthError(Exception):
    """The token is missing, malformed, expired or not ours (HTTP 401)."""


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: str

    @property
    def may_approve(self) -> bool:
        return self.role in APPROVER_ROLES


def signing_key(settings: AuthSettings) -> bytes:
    if settings.jwt_secret is not None:
        key = settings.jwt_secret.get_secret_value().encode()
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(f"AUTH_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        return key
    return _key_file(settings.jwt_secret_file)


def _key_file(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: of several processes starting together, one writes and the others read it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path.read_bytes().strip()


def issue(settings: AuthSettings, user_id: str, role: str, *, ttl: timedelta, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    claims = {
        "sub": user_id,
        "role": role.lower(),
        "iss": settings.issuer,
        "aud": settings.audience,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    return jwt.encode(claims, signing_key(settings), algorithm=ALGORITHM)


def verify(settings: AuthSettings, token: str, key: bytes | None = None) -> Principal:
    try:
        claims = jwt.decode(
            token,
            key or signing_key(settings),
            algorithms=[ALGORITHM],  # never "none", never an algorithm the token names
            audience=settings.audience,
            issuer=settings.issuer,
            options={"require": ["sub", "exp", "iat", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    user, role = claims.get("sub"), claims.get("role")
    if not isinstance(user, str) or not user or not isinstance(role, str) or not role:
        raise AuthError("invalid token: sub and role are required")
    return Principal(user_id=user, role=role)


class Tokens:
    """Verifies tokens with the key read once (the key file is not read on every request)."""

    def __init__(self, settings: AuthSettings | None = None) -> None:
        self.settings = settings or AuthSettings()
        self._key: bytes | None = None

    def verify(self, token: str) -> Principal:
        if self._key is None:
            self._key = signing_key(self.settings)
        return verify(self.settings, token, self._key)

    def csrf(self, token: str) -> str:
        """A form token bound to the session token: a page of ours can post, another site cannot."""
        if self._key is None:
            self._key = signing_key(self.settings)
        return hmac.new(self._key, b"csrf|" + token.encode(), hashlib.sha256).hexdigest()
