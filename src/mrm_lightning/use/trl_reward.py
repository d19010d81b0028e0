"""A personalized reward for TRL's ``GRPOTrainer``: each completion scored for its own user.

    model = PersonalizedRewardModel.from_checkpoint("best.ckpt")
    reward = MRMRewardFunction(model, ProfileStore("profiles.db", checkpoint=model.digest))
    GRPOTrainer(..., reward_funcs=[reward], train_dataset=dataset_with_a_user_id_column)

TRL calls ``reward(prompts=..., completions=..., **columns)``, every other dataset column
arriving in ``kwargs`` as a list with one entry per completion: the user ids are read from
``kwargs[user_column]``. Prompts and completions are plain strings, or conversations (lists of
``{"role", "content"}`` messages); see :func:`text_input`. TRL is not a dependency: nothing
here imports it (``pip install mrm-lightning[trl]`` installs a version checked with this stack).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ..data.encoder import TextInput
from .inference import PersonalizedRewardModel
from .profiles import UserProfile
from .store import ProfileStore

UnknownUser = Literal["prior", "error"]


class UnknownUserError(KeyError):
    """A user with no profile where unknown users are refused."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def _content(message: Any) -> str:
    """A message's text: its ``content`` string, or the text parts of a list of parts."""
    if not isinstance(message, Mapping) or "content" not in message:
        raise ValueError(f"a message must be a {{'role', 'content'}} object, got {message!r}")
    content = message["content"]
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    raise ValueError(f"a message's content must be text, got {content!r}")


def text_input(prompt: str | Sequence[Mapping], completion: str | Sequence[Mapping]) -> TextInput:
    """(history, prompt, response) of one prompt and completion, strings or conversations.

    A conversational prompt's LAST user message is the prompt and the messages before it the
    history; nothing may follow it. A conversational completion's response is the text of its
    assistant messages (joined by newlines where there are several)."""
    if isinstance(prompt, str):
        history, text = (), prompt
    else:
        messages = list(prompt)
        users = [
            i for i, m in enumerate(messages) if isinstance(m, Mapping) and m.get("role") == "user"
        ]
        if not users or users[-1] != len(messages) - 1:
            raise ValueError("a conversational prompt must end with a user message")
        last = users[-1]
        history = tuple((str(m.get("role")), _content(m)) for m in messages[:last])
        text = _content(messages[last])
    if isinstance(completion, str):
        return history, text, completion
    replies = [
        _content(m) for m in completion if isinstance(m, Mapping) and m.get("role") == "assistant"
    ]
    if not replies:
        raise ValueError(f"a conversational completion has no assistant message: {completion!r}")
    return history, text, "\n".join(replies)


class MRMRewardFunction:
    """A ``reward_funcs`` entry for TRL's ``GRPOTrainer`` (or any ``(prompts, completions,
    **columns) -> list[float]`` caller).

    Args:
        model: the trained model.
        store: the users' profiles (a :class:`ProfileStore` or its path); None: every user
            gets the prior.
        user_column: the dataset column holding the user id of each row.
        unknown_user: ``prior`` scores a user with no profile (or a row with no user id) with
            the model's prior; ``error`` raises :class:`UnknownUserError`.
    """

    def __init__(
        self,
        model: PersonalizedRewardModel,
        store: ProfileStore | str | Path | None = None,
        user_column: str = "user_id",
        unknown_user: UnknownUser = "prior",
    ) -> None:
        if unknown_user not in ("prior", "error"):
            raise ValueError(f"unknown_user must be 'prior' or 'error', got {unknown_user!r}")
        if isinstance(store, (str, Path)):
            store = ProfileStore(store, checkpoint=model.digest)
        self.model, self.store = model, store
        self.user_column, self.unknown_user = user_column, unknown_user
        self.__name__ = "mrm_reward"  # TRL logs each reward function under its __name__

    def profile(self, user: Any) -> UserProfile | None:
        """``user``'s profile, or None for the prior (or :class:`UnknownUserError`)."""
        found = None
        if user is not None and self.store is not None:
            found = self.store.get(str(user))
        if found is None and self.unknown_user == "error":
            where = "no user id" if user is None else f"no profile of user {str(user)!r}"
            raise UnknownUserError(f"{where} (unknown_user='error')")
        return found

    def __call__(
        self,
        prompts: Sequence[str | Sequence[Mapping]],
        completions: Sequence[str | Sequence[Mapping]],
        **kwargs: Any,
    ) -> list[float]:
        """One reward per completion, for the user in ``kwargs[user_column]`` of its row."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        users = kwargs.get(self.user_column)
        if users is None:
            users = [None] * len(completions)
        if len(users) != len(completions):
            raise ValueError(
                f"{len(users)} values of {self.user_column!r} but {len(completions)} completions"
            )
        found: dict[Any, UserProfile | None] = {}  # one store read per user and call
        for user in users:
            key = None if user is None else str(user)
            if key not in found:
                found[key] = self.profile(key)
        profiles = [found[None if u is None else str(u)] for u in users]
        items = [text_input(p, c) for p, c in zip(prompts, completions)]
        return self.model.score_items(items, profiles)
