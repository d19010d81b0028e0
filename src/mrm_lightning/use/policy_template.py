"""A policy's own chat template, learnt by example, to read its templated text back into
(history, prompt, response): ``mrm serve --policy-tokenizer PATH``.

:mod:`.chat_templates` knows the common templates by heart; this module reads any other from
the policy's tokenizer. The template renders probe conversations whose contents are sentinels
(:data:`PROBE`); the text around the sentinels is the template's markup (:class:`TemplateMarkup`):
what opens the conversation, what lies between a system message and the first user turn,
between a user turn and the assistant's reply (in the history, before the final reply, and the
generation prompt), between a reply and the next user turn, and what closes the final reply.
:meth:`TemplateMarkup.parse` then walks a query turn by turn over that markup.

A template that refuses a system message, or puts it anywhere but first (Mistral v3 folds it
into the last user turn, Gemma 3 into the first), has no system markup here: a query's system
text then stays where the template put it, as with the built-in templates. Markup that
changes from day to day (Llama 3.1's date) matches only the day it was learnt; on other days
such queries fall back to the built-in templates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .chat_templates import Parsed, Turn, strip_special_tokens

# Probe contents: words no template rewrites (no whitespace to trim, no markup), none a
# substring of another, in the order they must appear in a faithful rendering.
SYSTEM, USER1, REPLY1, USER2, REPLY2 = (
    "mrmprobeSYSTEM",
    "mrmprobeUSERone",
    "mrmprobeREPLYone",
    "mrmprobeUSERtwo",
    "mrmprobeREPLYtwo",
)
PROBE = [
    {"role": "user", "content": USER1},
    {"role": "assistant", "content": REPLY1},
    {"role": "user", "content": USER2},
    {"role": "assistant", "content": REPLY2},
]
PROBE_WITH_SYSTEM = [{"role": "system", "content": SYSTEM}, *PROBE]


def _between(text: str, before: str | None, after: str | None) -> str:
    """The text between the end of sentinel ``before`` (the start: None) and the start of
    sentinel ``after`` (the end: None)."""
    start = 0 if before is None else text.index(before) + len(before)
    return text[start : len(text) if after is None else text.index(after)]


def _in_order(text: str, sentinels: tuple[str, ...]) -> bool:
    places = [text.find(s) for s in sentinels]
    return all(p >= 0 for p in places) and places == sorted(places)


def _pattern(markup: str) -> str:
    """A regex matching ``markup`` with any whitespace where it has whitespace (decoding may
    add or drop spaces around special tokens; contents are stripped anyway)."""
    pieces = re.split(r"(\s+)", markup)
    return "".join(r"\s*" if piece.isspace() else re.escape(piece) for piece in pieces if piece)


def _alternatives(*markups: str) -> re.Pattern[str]:
    """A regex matching any of ``markups``, the longest tried first (at the same place, the
    one that takes more markup wins: Qwen3's generation prompt with its empty thinking block
    before the one without)."""
    distinct = sorted({m for m in markups if m.strip()}, key=len, reverse=True)
    return re.compile("|".join(f"(?:{_pattern(m)})" for m in distinct))


def _close_prefixes(close: str) -> tuple[str, ...]:
    """The prefixes of the final reply's closing markup at which a policy may have stopped:
    cut between special tokens (``<...>``) or at whitespace, so that a reply ending in ``<``
    keeps it."""
    pieces = re.findall(r"\s+|<[^<>\s]+>|[^\s<]+|<", close)
    prefixes = ("".join(pieces[: i + 1]).strip() for i in range(len(pieces)))
    return tuple(dict.fromkeys(p for p in prefixes if p))


@dataclass(frozen=True)
class TemplateMarkup:
    """A chat template's markup, as rendered around probe contents.

    Args:
        opening: before the first user turn when no system message is given (a default system
            prompt the template writes is part of it).
        user_to_reply: between a user turn and the reply; ``final_user_to_reply`` before the
            final reply and ``generation`` the generation prompt, where the template writes
            those differently.
        reply_to_user: between a reply and the next user turn.
        close: after the final reply.
        system_opening: before a system message; None where the template has no system turn
            of its own.
        system_to_user: between the system message and the first user turn.
        boundary_tokens: BOS, EOS and padding: stripped from the start of a query (BOS left
            out of ``opening``) and from the end of the final reply.
    """

    opening: str
    user_to_reply: str
    reply_to_user: str
    close: str = ""
    final_user_to_reply: str = ""
    generation: str = ""
    system_opening: str | None = None
    system_to_user: str = ""
    boundary_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("user_to_reply", "reply_to_user"):
            if not getattr(self, name).strip():
                raise ValueError(
                    f"its markup {name} is only whitespace: turns cannot be told apart"
                )

    @classmethod
    def from_renders(
        cls,
        plain: str,
        generation: str,
        with_system: str | None = None,
        boundary_tokens: tuple[str, ...] = (),
    ) -> TemplateMarkup:
        """The markup of a template from its renders of :data:`PROBE` (``plain``), of its
        first three turns with the generation prompt (``generation``) and of
        :data:`PROBE_WITH_SYSTEM` (``with_system``; None where the template refused it)."""
        if not _in_order(plain, (USER1, REPLY1, USER2, REPLY2)):
            raise ValueError("it does not render a conversation's turns in order")
        if not _in_order(generation, (USER1, REPLY1, USER2)):
            raise ValueError("it does not render a generation prompt's turns in order")
        system_opening, system_to_user = None, ""
        if with_system is not None and _in_order(
            with_system, (SYSTEM, USER1, REPLY1, USER2, REPLY2)
        ):
            system_opening = _between(with_system, None, SYSTEM)
            system_to_user = _between(with_system, SYSTEM, USER1)
        opening = _between(plain, None, USER1)
        if _pattern(system_opening or "") == _pattern(opening) or not system_to_user.strip():
            # the system message sits inside the first user turn (Gemma 3), or only whitespace
            # follows it: nothing marks where it ends, so it stays part of that turn
            system_opening, system_to_user = None, ""
        bos = [t for t in boundary_tokens if t and opening.startswith(t)]
        if bos:  # BOS is optional in a query (not every pipeline decodes it)
            opening = opening.removeprefix(bos[0])
            if system_opening is not None:
                system_opening = system_opening.removeprefix(bos[0])
        return cls(
            opening=opening,
            user_to_reply=_between(plain, USER1, REPLY1),
            reply_to_user=_between(plain, REPLY1, USER2),
            close=_between(plain, REPLY2, None),
            final_user_to_reply=_between(plain, USER2, REPLY2),
            generation=_between(generation, USER2, None),
            system_opening=system_opening,
            system_to_user=system_to_user,
            boundary_tokens=tuple(t for t in boundary_tokens if t),
        )

    def parse(self, query: str, prompt: str | None = None) -> Parsed | None:
        """(history, prompt, response) of ``query`` as this template renders it, or None
        where it does not (the caller falls back to the built-in templates).

        ``history`` is ((role, content), ...) of the turns before the last user turn, a system
        message first as ("system", content), as :func:`.chat_templates.parse_templated` gives
        it; contents lose whitespace at both ends, and the response its closing markup, EOS and
        padding. ``prompt``: the templated prompt the policy was given; where ``query`` starts
        with it and it parses up to a generation prompt, the response is all that follows it,
        so that markup the policy wrote in its reply cannot move the boundary.
        """
        if prompt is not None and prompt.strip() and query.startswith(prompt):
            turns = self.turns(prompt + REPLY1)
            if turns is not None and turns[-1] == ("assistant", REPLY1):
                turns[-1] = ("assistant", self._response(query[len(prompt) :], cut=True))
                return _as_triple(turns)
        turns = self.turns(query)
        return None if turns is None else _as_triple(turns)

    def turns(self, text: str) -> list[Turn] | None:
        """The turns of ``text``, ending in a reply (possibly left open), or None where this
        template's markup does not open it or it ends in a user turn."""
        text = self._lstrip_boundary(text)
        for opening, system in self._openings:
            found = opening.match(text)
            turns = None if found is None else self._turns_from(text, found.end(), system)
            if turns is not None:
                return turns
        return None

    @cached_property
    def _openings(self) -> list[tuple[re.Pattern[str], bool]]:
        """(opening, whether a system message follows it), the more specific first: Llama 2's
        ``[INST] <<SYS>>`` before ``[INST]``, a default system prompt (Vicuna's) before an
        empty system opening."""
        starts = [(self.opening, False)]
        if self.system_opening is not None:
            starts.append((self.system_opening, True))
        starts.sort(key=lambda start: len(start[0]), reverse=True)
        return [(re.compile(_pattern(opening)), system) for opening, system in starts]

    @cached_property
    def _separators(self) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
        """(system to user, user to reply, reply to user)."""
        to_reply = (self.user_to_reply, self.final_user_to_reply, self.generation)
        return (
            re.compile(_pattern(self.system_to_user)),
            _alternatives(*to_reply),
            _alternatives(self.reply_to_user),
        )

    def _turns_from(self, text: str, at: int, system: bool) -> list[Turn] | None:
        """The turns of ``text`` from ``at``, just after the opening: a state machine,
        system message (if ``system``), then user turn and reply in turn."""
        to_user_first, to_reply, to_user = self._separators
        turns: list[Turn] = []
        if system:
            found = to_user_first.search(text, at)
            if found is None:
                return None
            turns.append(("system", text[at : found.start()].strip()))
            at = found.end()
        while True:
            found = to_reply.search(text, at)
            if found is None:
                return None
            turns.append(("user", text[at : found.start()].strip()))
            at = found.end()
            found = to_user.search(text, at)
            if found is None:
                turns.append(("assistant", self._response(text[at:])))
                return turns
            turns.append(("assistant", text[at : found.start()].strip()))
            at = found.end()

    def _response(self, text: str, cut: bool = False) -> str:
        """The final reply without its closing markup (or the part of it before the policy
        stopped), EOS and padding; with ``cut``, only what comes before the first of them."""
        ends = (*_close_prefixes(self.close), *self.boundary_tokens)
        if cut:
            places = [text.find(end) for end in ends[:1] + self.boundary_tokens]
            text = text[: min((p for p in places if p >= 0), default=len(text))]
        return strip_special_tokens(text, ends)

    def _lstrip_boundary(self, text: str) -> str:
        while True:  # left padding, BOS
            before = text
            text = text.lstrip()
            for token in self.boundary_tokens:
                text = text.removeprefix(token)
            if text == before:
                return text


def _as_triple(turns: list[Turn]) -> Parsed:
    """Alternating turns, ending in the reply, as (history, prompt, response)."""
    return tuple(turns[:-2]), turns[-2][1], turns[-1][1]


def load_policy_template(path: str | Path) -> TemplateMarkup:
    """The markup of the chat template in the tokenizer folder ``path`` (no hub access).

    Raises:
        ValueError: naming ``path``: no tokenizer there, no chat template, or one whose turns
            cannot be told apart.
    """
    if not Path(path).is_dir():
        raise ValueError(f"{path}: no such tokenizer folder (--policy-tokenizer)")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: not a tokenizer folder ({first})") from None
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{path}: the tokenizer has no chat_template")

    def render(messages: list[dict], generation: bool = False) -> str:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation
        )

    try:
        with_system = render(PROBE_WITH_SYSTEM)
    except Exception:  # templates refuse a system role in their own ways (raise_exception)
        with_system = None
    tokens = (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token)
    try:
        return TemplateMarkup.from_renders(
            render(PROBE), render(PROBE[:3], generation=True), with_system, tokens
        )
    except Exception as error:
        raise ValueError(f"{path}: its chat template cannot be read: {error}") from None
