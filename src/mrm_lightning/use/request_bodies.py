"""What ``mrm serve``'s endpoints accept: the request bodies, and how a query and a user's
pairs are read from them (chat templates, the file readers' rules for usable pairs)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..data.records import DUPLICATE_PAIR, pair_or_drop_reason
from .chat_templates import parse_templated
from .policy_template import TemplateMarkup


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    query: list[str]
    prompts: list[str]
    user_id: str | None = None
    user_ids: list[str] | None = None
    labels: list[Any] | None = None  # OpenRLHF's: the users, with --user-field labels
    return_std: bool = False  # also each reward's standard deviation under the posterior


class Message(BaseModel):
    role: str
    content: str


class Pair(BaseModel):
    prompt: str
    chosen: str
    rejected: str
    history: list[Message] = []


class AdaptRequest(BaseModel):
    user_id: str
    pairs: list[Pair]
    # write only if the stored profile is still at this version (0: none): 409 otherwise
    if_version: int | None = None


class FeedbackRequest(BaseModel):
    user_id: str
    pairs: list[Pair]
    # a retried request with the same key is answered as the first, and counted once
    idempotency_key: str | None = None


def item_of(
    query: str, prompt: str, policy: TemplateMarkup | None = None
) -> tuple[tuple[tuple[str, str], ...], str, str]:
    """(history, prompt, response) of one query: parsed with the ``policy``'s own template
    where given and it renders the query (:mod:`.policy_template`), else from a known chat
    template (:mod:`.chat_templates`), else the prompt and :func:`response_of`."""
    parsed = None if policy is None else policy.parse(query, prompt)
    parsed = parsed if parsed is not None else parse_templated(query, prompt)
    return parsed if parsed is not None else ((), prompt, response_of(query, prompt))


def pair_key(pair: dict) -> tuple:
    history = tuple(tuple(turn) for turn in pair["history"])
    return history, pair["prompt"], pair["chosen"], pair["rejected"]


def usable_pairs(pairs: list[Pair], already: list[dict] = ()) -> tuple[list[dict], dict[str, int]]:
    """The pairs ``/adapt`` and ``/feedback`` learn from, as the file readers keep them (no
    empty or identical texts, no repeat of a pair, nor of one ``already`` stored), and how many
    were dropped for each reason."""
    kept, seen, dropped = [], {pair_key(p) for p in already}, Counter()
    for pair in pairs:
        reason = pair_or_drop_reason(pair.chosen, pair.rejected)
        history = tuple((m.role, m.content) for m in pair.history)
        key = (history, pair.prompt, pair.chosen, pair.rejected)
        if reason is None and key in seen:
            reason = DUPLICATE_PAIR
        if reason is not None:
            dropped[reason] += 1
            continue
        seen.add(key)
        kept.append({"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected,
                     "history": list(history)})  # fmt: skip
    return kept, dict(dropped)


def response_of(query: str, prompt: str) -> str:
    """The response inside an OpenRLHF query: the query less the prompt where it starts with
    it, else the whole query; whitespace stripped from both ends."""
    return (query[len(prompt) :] if prompt and query.startswith(prompt) else query).strip()
