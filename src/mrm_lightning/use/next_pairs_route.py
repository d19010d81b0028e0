"""``POST /next_pairs``: which comparisons to ask a user next, most informative first.

    {"user_id"?: "u17", "candidates": [{"prompt", "a", "b", "history"?}, ...], "k"?: 1}
    -> {"order": [indices into candidates], "pairs": [the chosen candidates], "profile": id|prior}

The same choice as ``mrm ask`` and ``PersonalizedRewardModel.next_pairs`` (expected information
gain under the user's posterior, the prior's for a user with no profile); a comparison already
stored for the user is never chosen. Guarded like ``/get_reward`` (the read key).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from .access import AccessRules, guarded
from .inference import PersonalizedRewardModel
from .limits import RequestLimits, check_sizes, within
from .profiles import ProfileError, UserProfile
from .request_bodies import Message
from .store import ProfileStore


class Candidate(BaseModel):
    prompt: str
    a: str
    b: str
    history: list[Message] = []


class NextPairsRequest(BaseModel):
    user_id: str | None = None
    candidates: list[Candidate]
    k: int = Field(1, ge=1)


def add_next_pairs_route(
    app: FastAPI,
    model: PersonalizedRewardModel,
    the_store: Callable[[], ProfileStore],
    profile_of: Callable[[str | None], UserProfile | None],
    on_worker: Callable[[Callable[[], Any]], Awaitable[Any]],
    rules: AccessRules,
    limits: RequestLimits,
) -> None:
    def choose(body: NextPairsRequest) -> dict[str, Any]:
        user = body.user_id
        profile = profile_of(user)
        answered = the_store().judgements(user) if user is not None else []
        candidates = [c.model_dump() for c in body.candidates]
        try:
            order = model.next_pairs(profile, candidates, body.k, answered)
        except ProfileError as error:  # no uncertainty known for this profile or model
            raise HTTPException(409, str(error)) from None
        except ValueError as error:
            raise HTTPException(400, str(error)) from None
        return {
            "order": order,
            "pairs": [candidates[i] for i in order],
            "profile": user if profile is not None else "prior",
        }

    @app.post("/next_pairs", dependencies=[guarded(rules.check_read)])
    async def next_pairs(body: NextPairsRequest) -> dict[str, Any]:
        sides = ("prompt", "a", "b")
        texts = [(f"candidates[{i}].{side}", getattr(c, side))
                 for i, c in enumerate(body.candidates) for side in sides]  # fmt: skip
        check_sizes(limits, len(body.candidates), texts)
        return await within(limits, on_worker(lambda: choose(body)))
