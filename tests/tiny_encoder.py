"""A tiny random BERT saved to a local folder: a real Hugging Face encoder for offline tests.

Never the bundled MiniLM: this one has 16-dimensional states, two layers and a ~100-token
WordPiece vocabulary (every lowercase letter and digit also as a ``##`` continuation, so any
lowercase word tokenizes to something other than ``[UNK]``). Building it takes well under a
second.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an is it no yes for name cat suggest rain cloud clouds water explain one "
    "sentence write about please prime and in of to".split()
)
VOCAB = list(
    dict.fromkeys(
        SPECIAL
        + list(string.ascii_lowercase + string.digits + ".,:;!?'\"-=")
        + ["##" + c for c in string.ascii_lowercase + string.digits]
        + WORDS
    )
)
HIDDEN = 16


def build_tiny_bert(
    folder: str | Path, seed: int = 0, tokenizer: bool = True, max_positions: int = 64
) -> Path:
    """Save a seeded random ``BertModel`` (and its tokenizer) to ``folder``; return the path.
    ``max_positions``: the longest input it takes, in tokens (most words are a token a letter)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    if tokenizer:
        # positional: `vocab_file` in transformers 4.x, `vocab` (a path works) in 5.x, where a
        # `vocab_file=` keyword is silently ignored and gives a 5-token vocabulary.
        tok = BertTokenizerFast(str(vocab_file))
        assert len(tok.get_vocab()) == len(VOCAB), "the tiny vocabulary was not loaded"
        tok.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=max_positions,
    )
    BertModel(config).eval().save_pretrained(str(folder))
    return folder
