"""Limits on what one request to ``mrm serve`` may ask, so that no request can stall the rest.

- The body: at most ``max_body_bytes``. A declared ``Content-Length`` above it is refused
  before a byte is read; a body streamed without one is cut off when it passes the limit.
  Either way the answer is 413 naming the limit (:class:`BodySizeLimit`, an ASGI middleware).
- Items and texts: at most ``max_items`` queries or pairs a request, ``max_text_chars``
  characters a text (413 naming the limit and the item, :func:`check_sizes`).
- Time: a request not answered within ``request_timeout_s`` gets 504 (:func:`within`); the
  client is free, though work already on the model's thread finishes there.
- No answer echoes what was sent: FastAPI's validation errors carry each wrong value back
  (a 70 MB body came back whole); :func:`validation_details` keeps where and what, not the value.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.exceptions import HTTPException

T = TypeVar("T")


@dataclass(frozen=True)
class RequestLimits:
    """``mrm serve``'s ``--max-body-mb``, ``--max-items``, ``--max-text-chars``."""

    max_body_bytes: int = 16 << 20
    max_items: int = 4096
    max_text_chars: int = 65_536
    request_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if min(self.max_body_bytes, self.max_items, self.max_text_chars) < 1:
            raise ValueError("--max-body-mb, --max-items and --max-text-chars must be positive")
        if self.request_timeout_s <= 0:
            raise ValueError("--request-timeout-s must be positive")


def too_large(what: str) -> HTTPException:
    return HTTPException(413, what)


def check_sizes(limits: RequestLimits, items: int, texts: Iterable[tuple[str, str]]) -> None:
    """413 where a request holds more than ``max_items`` items, or a text (``(name, text)``,
    e.g. ``("query[3]", ...)``) longer than ``max_text_chars`` characters."""
    if items > limits.max_items:
        raise too_large(f"{items} items: at most {limits.max_items} a request (--max-items)")
    for name, text in texts:
        if len(text) > limits.max_text_chars:
            raise too_large(
                f"{name} has {len(text)} characters: at most {limits.max_text_chars} "
                "(--max-text-chars)"
            )


def validation_details(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors without the values sent (``input``) or their context."""
    return [{key: error[key] for key in ("type", "loc", "msg") if key in error} for error in errors]


class BodySizeLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, declared or streamed."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(send)
            return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # FastAPI passes an HTTPException on as it is
                    raise too_large(self.message())
            return message

        await self.app(scope, counted, send)

    def message(self) -> str:
        return f"the body is over {self.max_bytes} bytes (--max-body-mb)"

    async def refuse(self, send) -> None:
        body = json.dumps({"detail": self.message()}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def check_pairs(limits: RequestLimits, user: str, pairs: Sequence) -> None:
    """A user's pairs for ``/adapt`` or ``/feedback``: named, not empty, within the limits."""
    if not user:
        raise HTTPException(400, "'user_id' must not be empty")
    if not pairs:
        raise HTTPException(400, "'pairs' must hold at least one pair")
    texts = [
        (f"pairs[{i}].{name}", text)
        for i, pair in enumerate(pairs)
        for name, text in [
            ("prompt", pair.prompt),
            ("chosen", pair.chosen),
            ("rejected", pair.rejected),
            *((f"history[{j}]", m.content) for j, m in enumerate(pair.history)),
        ]
    ]
    check_sizes(limits, len(pairs), texts)


async def within(limits: RequestLimits, work: Awaitable[T]) -> T:
    """``work``'s result, or 504 once ``limits.request_timeout_s`` have passed."""
    try:
        return await asyncio.wait_for(work, limits.request_timeout_s)
    except TimeoutError:
        raise HTTPException(
            504, f"not answered within {limits.request_timeout_s:g} s (--request-timeout-s)"
        ) from None
