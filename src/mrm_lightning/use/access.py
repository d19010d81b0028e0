"""Who may write and read through ``mrm serve``: bearer keys, and a read-only mode.

On a cluster the reward server listens beyond loopback, so anyone who reaches its port could
overwrite any user's profile. With a write key (``--api-key`` or ``MRM_API_KEY``) every write
(``/adapt``) needs ``Authorization: Bearer <key>``; a read key (``--read-key`` or
``MRM_READ_KEY``) does the same for ``/get_reward`` (the write key reads too). ``/health``
stays open for probes. Keys are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, Header, HTTPException

API_KEY_ENV = "MRM_API_KEY"
READ_KEY_ENV = "MRM_READ_KEY"


@dataclass(frozen=True)
class Refusal:
    """Why a request may not proceed: an HTTP status (401: no key given, 403: not allowed)
    and a message naming what would allow it."""

    status: int
    message: str


@dataclass(frozen=True)
class AccessRules:
    """``write_key`` guards writes, ``read_key`` reads (None: open); ``read_only`` refuses
    every write whatever the key."""

    write_key: str | None = None
    read_key: str | None = None
    read_only: bool = False

    def __post_init__(self) -> None:
        for name, key in (("--api-key", self.write_key), ("--read-key", self.read_key)):
            if key is not None and len(key) < 16:
                raise ValueError(f"{name} must be at least 16 characters (a random token)")

    def check_write(self, authorization: str | None) -> Refusal | None:
        if self.read_only:
            return Refusal(403, "this server is read-only (mrm serve --read-only)")
        return check_bearer(authorization, [self.write_key], "writes", API_KEY_ENV)

    def check_read(self, authorization: str | None) -> Refusal | None:
        if self.read_key is None:
            return None
        return check_bearer(authorization, [self.read_key, self.write_key], "reads", READ_KEY_ENV)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for anything else."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_bearer(
    authorization: str | None, keys: list[str | None], what: str, env: str
) -> Refusal | None:
    """None where the header carries one of ``keys`` (or no key is set), else the refusal."""
    accepted = [key for key in keys if key is not None]
    if not accepted:
        return None
    token = bearer_token(authorization)
    if token is None:
        return Refusal(401, f"{what} need 'Authorization: Bearer <key>' (the server's key: {env})")
    if not any(hmac.compare_digest(token.encode(), key.encode()) for key in accepted):
        return Refusal(403, f"the key given is not valid for {what}")
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: assume it is reachable from elsewhere
        return False


def exposure_warning(host: str, rules: AccessRules) -> str | None:
    """The warning to print at start where writes are open to the network, else None."""
    if is_loopback(host) or rules.read_only or rules.write_key is not None:
        return None
    return (
        f"listening on {host} without a write key: anyone who reaches this port can overwrite "
        f"any user's profile (POST /adapt). Set {API_KEY_ENV} (or --api-key), or --read-only"
    )


def guarded(check: Callable[[str | None], Refusal | None]):
    """A FastAPI dependency that refuses a request (401/403) unless ``check`` lets its
    ``Authorization`` header through."""

    async def dependency(authorization: str | None = Header(default=None)) -> None:
        refusal = check(authorization)
        if refusal is not None:
            challenge = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
            raise HTTPException(refusal.status, refusal.message, headers=challenge)

    return Depends(dependency)
