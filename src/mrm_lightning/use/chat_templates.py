"""A policy's templated text back into (history, prompt, response), chat markup removed.

RLHF pipelines (OpenRLHF's remote reward model, for one) send the reward server what the policy
decoded, chat template and special tokens included; the encoder was trained on plain turns.
:func:`parse_templated` recognises the common templates and returns the plain triple, or None
where none is recognised, so that the caller falls back to its plain handling:

- ChatML (Qwen, Phi-4's ``<|im_sep|>`` variant): ``<|im_start|>role\\n...<|im_end|>``
- Llama 3: ``<|begin_of_text|><|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>``
- Gemma: ``<bos><start_of_turn>user\\n...<end_of_turn>``, role ``model`` for the assistant
- Phi-3: ``<|user|>\\n...<|end|>``, optionally ``<|endoftext|>`` at the end
- Zephyr: ``<|user|>\\n...</s>``
- Mistral and Llama 2: ``<s>[INST] ... [/INST] ...</s>``, with Llama 2's ``<<SYS>>`` block or
  Mistral's ``[SYSTEM_PROMPT]`` block for the system message

Which template: the one whose turn marker OPENS the text once BOS and padding tokens are
stripped, so markup quoted inside a message (``[INST]`` in a ChatML message) cannot change it.
Phi-3 and Zephyr open alike; the token that closes the first turn tells them apart (``<|end|>``
is Phi-3, tried first). Templates that fold the system message into a user turn (Mistral v3,
Gemma 3) leave it there: nothing marks where it ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Turn = tuple[str, str]  # (role, content)
Parsed = tuple[tuple[Turn, ...], str, str]  # (history, prompt, response)

# BOS, EOS and padding tokens of the families below, any of which may precede the first turn
# (pipelines left-pad): stripped from the start before a template is looked for. At the end,
# each template's own end tokens (padding included) close the final turn instead, so that a
# reply may end in another family's token, ``</s>`` quoted in a ChatML message, say.
BOUNDARY_TOKENS = (
    "<s>",
    "</s>",
    "<unk>",
    "<pad>",
    "<bos>",
    "<eos>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
    "<|endoftext|>",
    "<|im_end|>",
    "<end_of_turn>",
    "<|end|>",
)

# Qwen3's template writes an empty thinking block into an assistant turn when thinking is off:
# markup, not the policy's words. A non-empty block is the policy's and is kept.
_EMPTY_THINKING = re.compile(r"^<think>\s*</think>\s*")

# Llama 3.1+ writes the knowledge cutoff and today's date (and, with tools, the environment)
# at the head of the system turn, a system message or not: markup, not the user's system message.
_LLAMA3_DATE_HEADER = re.compile(
    r"^(?:Environment: [^\n]*\n)?(?:Tools: [^\n]*\n\n)?"
    r"Cutting Knowledge Date: [^\n]*\nToday Date: [^\n]*\s*"
)


def strip_special_tokens(text: str, tokens: Iterable[str]) -> str:
    """``text`` without any run of ``tokens`` and whitespace at either end (``str.strip``
    for special tokens); tokens inside the text are left alone."""
    return _strip_tokens(text, tuple(tokens), right=True)


def _strip_tokens(text: str, tokens: tuple[str, ...], right: bool) -> str:
    """``text`` without tokens and whitespace at its start, and at its end if ``right``."""
    tokens = tuple(token for token in tokens if token)
    while True:
        before = text
        text = text.strip() if right else text.lstrip()
        for token in tokens:
            text = text.removeprefix(token)
            text = text.removesuffix(token) if right else text
        if text == before:
            return text


def _lstrip_boundary(text: str) -> str:
    return _strip_tokens(text, BOUNDARY_TOKENS, right=False)


def _cut(body: str, ends: Iterable[str]) -> str:
    """A turn's content: ``body`` up to its first end token (all of it if the turn was left
    open), without whitespace at either end: the template's newlines and spaces, and the
    spaces decoding adds (several templates trim contents anyway). Inner whitespace is kept."""
    cut = min((i for i in (body.find(end) for end in ends) if i >= 0), default=len(body))
    return body[:cut].strip()


@dataclass(frozen=True)
class HeaderTemplate:
    """A template that opens each turn with a header naming the role and closes it with an
    end token.

    Args:
        name: the template's name, for messages.
        header: a turn's header; group 1 is the role.
        ends: the tokens that close a turn.
        roles: the template's role names that differ from ours (Gemma's ``model``).
        system_preamble: markup the template writes at the head of the system turn.
    """

    name: str
    header: re.Pattern[str]
    ends: tuple[str, ...]
    roles: Mapping[str, str] = field(default_factory=dict)
    system_preamble: re.Pattern[str] | None = None

    def opens(self, text: str) -> bool:
        """Whether ``text`` starts with this template's header and its first turn is closed by
        this template's end token (or runs to the end of the text, left open)."""
        first = self.header.match(text)
        if first is None:
            return False
        following = self.header.search(text, first.end())
        body = text[first.end() : following.start() if following else len(text)]
        return following is None or any(end in body for end in self.ends)

    def turns(self, text: str) -> list[Turn]:
        """The (role, content) turns of ``text``, which :meth:`opens`."""
        headers = list(self.header.finditer(text))
        turns = []
        for header, following in zip(headers, [*headers[1:], None]):
            body = text[header.end() : following.start() if following else len(text)]
            role = self.roles.get(header[1], header[1])
            content = _cut(body, self.ends)
            if role == "system" and self.system_preamble is not None:
                content = self.system_preamble.sub("", content).strip()
                if not content:  # the preamble alone: no system message was given
                    continue
            turns.append((role, content))
        return turns


# Llama 2 puts the system message in a block at the head of the first user turn.
_LLAMA2_SYSTEM = re.compile(r"^<<SYS>>\n?(.*?)\n?<</SYS>>\s*", re.DOTALL)
# Mistral's later templates give it a block of its own before the first [INST].
_MISTRAL_SYSTEM = re.compile(r"^\[SYSTEM_PROMPT\](.*?)\[/SYSTEM_PROMPT\]", re.DOTALL)


@dataclass(frozen=True)
class InstTemplate:
    """Mistral and Llama 2: each user turn inside ``[INST] ... [/INST]``, the assistant's reply
    after it up to ``</s>``. Spacing differs between versions (``[INST] Hi [/INST] Hello``,
    ``[INST] Hi[/INST] Hello``, ``[INST]Hi[/INST]Hello``); contents are stripped alike.
    """

    name: str = "mistral"
    ends: tuple[str, ...] = ("</s>", "<unk>")  # <unk>: Llama 2's usual padding

    def opens(self, text: str) -> bool:
        return text.startswith(("[INST]", "[SYSTEM_PROMPT]"))

    def turns(self, text: str) -> list[Turn]:
        turns = []
        system = _MISTRAL_SYSTEM.match(text)
        if system:
            turns.append(("system", system[1].strip()))
            text = text[system.end() :]
        for chunk in text.split("[INST]")[1:]:
            user, closed, reply = chunk.partition("[/INST]")
            user = user.strip()
            system = _LLAMA2_SYSTEM.match(user) if not turns else None
            if system:
                turns.append(("system", system[1].strip()))
                user = user[system.end() :]
            turns.append(("user", user.strip()))
            if closed:  # an assistant turn follows, even if empty (the generation prompt)
                turns.append(("assistant", _cut(reply, self.ends)))
        return turns


Template = HeaderTemplate | InstTemplate

CHATML = HeaderTemplate(
    "chatml",
    re.compile(r"<\|im_start\|>(\w+)(?:\n|<\|im_sep\|>|$)"),
    ends=("<|im_end|>", "<|endoftext|>"),
)
LLAMA3 = HeaderTemplate(
    "llama3",
    re.compile(r"<\|start_header_id\|>(\w+)<\|end_header_id\|>"),
    ends=("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"),
    system_preamble=_LLAMA3_DATE_HEADER,
)
GEMMA = HeaderTemplate(
    "gemma",
    re.compile(r"<start_of_turn>(\w+)(?:\n|$)"),
    ends=("<end_of_turn>", "<eos>", "<pad>"),
    roles={"model": "assistant"},
)
PHI3 = HeaderTemplate(
    "phi3",
    re.compile(r"<\|(system|user|assistant)\|>"),
    ends=("<|end|>", "<|endoftext|>"),
)
ZEPHYR = HeaderTemplate("zephyr", PHI3.header, ends=("</s>", "<unk>"))
MISTRAL = InstTemplate()

# Order matters only where two templates open alike: Phi-3 before Zephyr (see the docstring).
TEMPLATES: tuple[Template, ...] = (CHATML, LLAMA3, GEMMA, PHI3, ZEPHYR, MISTRAL)


def recognise(text: str) -> Template | None:
    """The template that opens ``text`` (BOS and padding already stripped), if any."""
    return next((template for template in TEMPLATES if template.opens(text)), None)


def _as_triple(turns: list[Turn]) -> Parsed | None:
    """(history, prompt, response) of a conversation ending in an assistant turn: the response
    is that turn, the prompt the last user turn before it, the history the turns before the
    prompt. Turns between the prompt and the response (tool calls and their results) are
    dropped: the triple has no place for them. None without such a user and assistant turn."""
    if not turns or turns[-1][0] != "assistant":
        return None
    users = [i for i, (role, _) in enumerate(turns[:-1]) if role == "user"]
    if not users:
        return None
    last_user = users[-1]
    response = _EMPTY_THINKING.sub("", turns[-1][1])
    return tuple(turns[:last_user]), turns[last_user][1], response


def _parse(text: str) -> tuple[Template, list[Turn]] | None:
    text = _lstrip_boundary(text)
    template = recognise(text)
    return None if template is None else (template, template.turns(text))


def parse_templated(text: str, prompt: str | None = None) -> Parsed | None:
    """(history, prompt, response) of a policy's templated ``text``, or None where no known
    template opens it or it does not end in an assistant turn that answers a user turn.

    ``history`` is ((role, content), ...) of the turns before the last user turn, a system
    message first as ("system", content); ``prompt`` is that user turn and ``response`` the
    final assistant turn, which may be left open (no end token). Contents lose whitespace at
    both ends (see :func:`_cut`) and an empty thinking block opening the response; nothing else.

    Args:
        text: the decoded prompt and response, special tokens included.
        prompt: the templated prompt the policy was given, where the pipeline sends it too
            (OpenRLHF's ``prompts``). If ``text`` starts with it (BOS and padding aside) and it
            ends in an open assistant turn, the response is what follows it up to the first
            end token, so that markup the policy wrote in its reply cannot move the boundary;
            otherwise it is ignored.
    """
    if prompt is not None:
        split = _split_at_prompt(text, prompt)
        if split is not None:
            return split
    parsed = _parse(text)
    return None if parsed is None else _as_triple(parsed[1])


def _split_at_prompt(text: str, prompt: str) -> Parsed | None:
    """The parse of ``text`` with the response taken as what follows ``prompt``, or None where
    ``prompt`` is not a templated prefix of ``text`` ending in an open assistant turn."""
    head = _lstrip_boundary(prompt).rstrip()
    whole = _lstrip_boundary(text)
    parsed = _parse(head)
    if not head or not whole.startswith(head) or parsed is None:
        return None
    template, turns = parsed
    if not turns or turns[-1][0] != "assistant" or _EMPTY_THINKING.sub("", turns[-1][1]):
        return None
    response = _cut(whole[len(head) :], template.ends)
    return _as_triple([*turns[:-1], ("assistant", response)])
