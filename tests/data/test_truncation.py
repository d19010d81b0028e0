"""Truncation keeps the whole response: history and the prompt's start are cut first.

On the tiny random BERT (tests/tiny_encoder.py): every single letter, digit and word of its
vocabulary is one token, so the expected token lists below can be counted by hand.
"""

from __future__ import annotations

import string
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mrm_lightning.data import encoder as encoder_module
from mrm_lightning.data.cache import fingerprint
from mrm_lightning.data.encoder import fit_pair, history_starts
from tests.data.test_encoder_and_cache import make_encoder
from tests.tiny_encoder import build_tiny_bert

LETTERS = " ".join(string.ascii_lowercase)  # 26 one-token words, a .. z
# one "role : content ;" line per message: 3 tokens of overhead each
TEMPLATE = "{% for m in messages %}{{ m['role'][0] }} : {{ m['content'] }} ; {% endfor %}"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=0)


def tokens_of(encoder, ids) -> list[str]:
    return encoder._tokenizer.convert_ids_to_tokens(ids)


def loaded(model_dir, **settings):
    encoder = make_encoder(model_dir, **settings)
    encoder.load()
    return encoder


def slow_tokenizer(model_dir):
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    return BertTokenizerLegacy(str(model_dir / "vocab.txt"))


# ----------------------------------------------------------------------- pure helpers
@pytest.mark.parametrize(
    "prompt, response, room, kept",
    [
        (40, 3, 7, (4, 3)),  # long prompt: the response whole, the prompt gets the rest
        (3, 4, 10, (3, 4)),  # everything fits
        (10, 7, 7, (0, 7)),  # the response fills the room exactly: no prompt
        (5, 20, 10, (0, 10)),  # the response alone is too long: its first 10 tokens
        (0, 0, 5, (0, 0)),
    ],
)
def test_fit_pair_by_hand(prompt, response, room, kept):
    assert fit_pair(prompt, response, room) == kept


@pytest.mark.parametrize(
    "roles, starts",
    [
        ([], [0]),
        (["user", "assistant"], [0, 2]),
        (["user", "assistant", "user", "assistant"], [0, 2, 4]),
        (["system", "user", "assistant"], [0, 1, 3]),  # the system line is the oldest
        (["assistant"], [0, 1]),
    ],
)
def test_history_starts_by_hand(roles, starts):
    assert history_starts([(role, "x") for role in roles]) == starts


# --------------------------------------------------------------------- text-pair path
def test_a_long_prompt_loses_its_start_and_the_response_stays_whole(model_dir):
    encoder = loaded(model_dir, max_length=16)
    assert not encoder.uses_template
    item = ((("user", "one two"),), LETTERS, "yes it is the cat")
    inputs, cut = encoder.tokenize([item, ((), "a", "no")])
    # room 16 - 3 special tokens = 13: the response's 5, then the prompt's last 8 (s .. z);
    # the history, at the start of the prompt side, went first
    expected = ["[CLS]", *"stuvwxyz", "[SEP]", "yes", "it", "is", "the", "cat", "[SEP]"]
    assert tokens_of(encoder, inputs["input_ids"][0].tolist()) == expected
    assert inputs["token_type_ids"][0].tolist() == [0] * 10 + [1] * 6
    # the short text is padded on the right
    assert tokens_of(encoder, inputs["input_ids"][1, :5].tolist()) == [
        "[CLS]", "a", "[SEP]", "no", "[SEP]"
    ]  # fmt: skip
    assert inputs["attention_mask"].sum(1).tolist() == [16, 5] and cut == 0

    # a slow (pure Python) tokenizer keeps the same tokens
    encoder._tokenizer = slow_tokenizer(model_dir)
    slow, _ = encoder.tokenize([item, ((), "a", "no")])
    assert torch.equal(slow["input_ids"], inputs["input_ids"])
    assert torch.equal(slow["attention_mask"], inputs["attention_mask"])


def test_long_responses_differing_only_at_their_start_encode_differently(model_dir):
    # the regression: a left cut of the pair kept only the responses' shared ends, so the two
    # texts encoded to the same vector
    encoder = loaded(model_dir, max_length=64)
    prompt = " ".join([LETTERS] * 4)  # 104 tokens
    shared = " ".join(["the cat is in the rain"] * 5)  # 30 tokens
    first = ("yes " * 10) + shared
    second = ("no " * 10) + shared
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both responses fit whole: no warning
        vectors = encoder.encode([((), prompt, first), ((), prompt, second)], progress=False)
        inputs, cut = encoder.tokenize([((), prompt, first), ((), prompt, second)])
    assert cut == 0 and inputs["input_ids"].shape == (2, 64)
    for row, response in zip(inputs["input_ids"], (first, second)):
        response_ids = encoder._tokenizer(response, add_special_tokens=False)["input_ids"]
        assert row[-41:-1].tolist() == response_ids  # all 40 tokens, before the last [SEP]
        assert tokens_of(encoder, row[1:22].tolist()) == list(string.ascii_lowercase[5:])
    assert F.cosine_similarity(vectors[0], vectors[1], dim=0) < 0.999


def test_a_response_longer_than_max_length_keeps_its_start_and_warns(model_dir):
    encoder = loaded(model_dir, max_length=12)
    long = ((), "one two", LETTERS)
    inputs, cut = encoder.tokenize([long])
    # the prompt is dropped; the response's first 12 - 3 = 9 tokens are kept
    assert tokens_of(encoder, inputs["input_ids"][0].tolist()) == [
        "[CLS]", "[SEP]", *"abcdefghi", "[SEP]"
    ]  # fmt: skip
    assert cut == 1

    items = [long, ((), "a", "yes"), ((), "", LETTERS + " yes"), ((), "b", "no")]
    with pytest.warns(UserWarning, match="2 of 4 texts") as caught:
        encoder.encode(items, progress=False)  # two batches of 3 and 1: one warning
    assert len([w for w in caught if "max_length" in str(w.message)]) == 1
    with pytest.warns(UserWarning, match="1 of 2 texts"):
        encoder.encode_batch([long, ((), "a", "yes")])  # `mrm embed` calls it directly


def test_the_cache_key_names_the_truncation_rule(model_dir, monkeypatch):
    identity = make_encoder(model_dir).identity()
    assert identity["truncation"] == "prompt_start_v2"
    monkeypatch.setattr(encoder_module, "TRUNCATION", "another_rule")
    assert fingerprint(make_encoder(model_dir).identity()) != fingerprint(identity)


# ------------------------------------------------------------------ chat-template path
HISTORY = (("user", "a b c"), ("assistant", "d e"), ("user", "f g"), ("assistant", "h i"))


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "slow"])
@pytest.mark.parametrize(
    "max_length, item, kept",
    [
        (  # everything fits: 6 + 5 + 5 + 5 + 5 + 6 tokens
            32,
            (HISTORY, "j k", "yes it is"),
            "u : a b c ; a : d e ; u : f g ; a : h i ; u : j k ; a : yes it is ;",
        ),
        (  # the oldest exchange goes first ...
            22,
            (HISTORY, "j k", "yes it is"),
            "u : f g ; a : h i ; u : j k ; a : yes it is ;",
        ),
        (  # ... then the next; the prompt and response fit
            16,
            (HISTORY, "j k", "yes it is"),
            "u : j k ; a : yes it is ;",
        ),
        (  # no history left: the prompt loses its start (9 tokens besides it, 5 kept)
            14,
            (HISTORY, "a b c d e f g h i j", "yes it is"),
            "u : f g h i j ; a : yes it is ;",
        ),
        (  # the response alone is too long: no prompt, the response's first 12 - 6 tokens
            12,
            (HISTORY, "one", "a b c d e f g h i j k l"),
            "u : ; a : a b c d e f ;",
        ),
    ],
)
def test_chat_template_drops_old_turns_then_the_prompt_start(
    model_dir, fast, max_length, item, kept
):
    encoder = loaded(model_dir, max_length=max_length)
    if not fast:
        encoder._tokenizer = slow_tokenizer(model_dir)
    encoder._tokenizer.chat_template = TEMPLATE
    assert encoder.uses_template
    inputs, cut = encoder.tokenize([item])
    assert tokens_of(encoder, inputs["input_ids"][0].tolist()) == kept.split()
    assert cut == (max_length == 12)


def test_chat_template_longer_than_max_length_is_an_error(model_dir):
    encoder = loaded(model_dir, max_length=8)
    encoder._tokenizer.chat_template = "= = = = = = = = = {% for m in messages %}{% endfor %}"
    with pytest.raises(ValueError, match="chat template alone takes 9 tokens"):
        encoder.tokenize([((), "a", "b")])


def test_the_warning_points_at_the_caller(model_dir):
    encoder = loaded(model_dir, max_length=12)
    long = ((), "one two", LETTERS)
    with pytest.warns(UserWarning, match="1 of 1 texts") as caught:
        encoder.encode_batch([long])
        encoder.encode([long], progress=False)
    assert [w.filename for w in caught] == [__file__, __file__]
