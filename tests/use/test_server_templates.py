"""A policy's chat-templated query scores as its plain (history, prompt, response): what
OpenRLHF sends (decoded with special tokens) meets the encoder as the training data did."""

from __future__ import annotations

import pytest

from mrm_lightning.data.sources.pairs import read_pairs
from mrm_lightning.use.inference import PersonalizedRewardModel
from mrm_lightning.use.server import create_app
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)
from tests.use.test_chat_templates import CASES
from tests.use.test_server import call, serving_in_a_thread

FAMILIES = ("chatml", "qwen3", "phi4", "llama3", "llama2", "mistral", "gemma", "phi3", "zephyr")


def test_every_family_is_covered():
    for family in FAMILIES:
        assert any(name.startswith(family) for name in CASES), family


def test_templated_queries_score_as_their_plain_texts(text_model, tmp_path):  # noqa: F811
    ckpt, pairs, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    profile = model.adapt([r for r in read_pairs(pairs) if r.user == "u3"])
    names = sorted(CASES)
    queries = [CASES[name][0] for name in names]
    plain = [CASES[name][1] for name in names]
    expected = model.score_items(plain, [profile] * len(plain))
    store = tmp_path / "profiles.db"
    from mrm_lightning.use.store import ProfileStore

    with ProfileStore(store, checkpoint=model.digest) as profiles:
        profiles.put("u3", profile)
    with serving_in_a_thread(create_app(model, store)) as base:
        body = {"query": queries, "prompts": [""] * len(queries), "user_id": "u3"}
        status, answer = call(base, "/get_reward", body)
    assert status == 200, answer
    for name, got, want in zip(names, answer["rewards"], expected):
        assert got == pytest.approx(want, abs=1e-5), name
    # and the markup did matter: scored raw, as plain text, at least one template differs
    raw = model.score_items([((), "", q) for q in queries], [profile] * len(queries))
    assert max(abs(a - b) for a, b in zip(raw, expected)) > 1e-3


def test_openrlhf_shaped_templated_request_scores_as_plain(text_model, tmp_path):  # noqa: F811
    """OpenRLHF: ``prompts`` holds the templated prompt (generation prompt included) and
    ``query`` that prompt with the decoded response and its end token."""
    ckpt, _, _ = text_model
    model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
    prompt = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nexplain clouds<|im_end|>\n"
    prompt += "<|im_start|>assistant\n"
    query = prompt + "water in the air<|im_end|><|endoftext|>"
    plain = ((("system", "Be brief."),), "explain clouds", "water in the air")
    expected = model.score_items([plain], [None])
    with serving_in_a_thread(create_app(model, tmp_path / "profiles.db")) as base:
        status, answer = call(base, "/get_reward", {"query": [query], "prompts": [prompt]})
    assert status == 200 and answer["rewards"] == pytest.approx(expected, abs=1e-5)
