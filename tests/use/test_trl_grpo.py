"""TRL's real GRPOTrainer trains a (tiny, random) policy with MRMRewardFunction as its reward,
for plain and for conversational prompts: each completion is scored for its own row's user.
Runs where TRL is installed (`make install` installs it), skips with the reason elsewhere."""

from __future__ import annotations

import pytest
import torch

from mrm_lightning.use.trl_reward import MRMRewardFunction, text_input
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)
from tests.tiny_encoder import VOCAB, build_tiny_bert
from tests.use.test_trl_reward import served  # noqa: F401 (the module-scoped fixture)

trl = pytest.importorskip("trl", reason="TRL is not installed: pip install 'mrm-lightning[trl]'")
datasets = pytest.importorskip("datasets")

CHAT = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} [SEP] {% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def tiny_policy(folder):
    """A one-layer random Llama and the tiny WordPiece tokenizer, with a chat template."""
    from transformers import BertTokenizerFast, LlamaConfig, LlamaForCausalLM

    build_tiny_bert(folder)
    tokenizer = BertTokenizerFast.from_pretrained(str(folder))
    tokenizer.eos_token, tokenizer.bos_token = "[SEP]", "[CLS]"
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # no token_type_ids
    tokenizer.chat_template = CHAT
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=32, max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.cls_token_id,
    )  # fmt: skip
    return LlamaForCausalLM(config), tokenizer


@pytest.mark.parametrize("conversational", [False, True], ids=["plain", "conversational"])
def test_grpo_trainer_trains_with_each_rows_user_reward(served, tmp_path, conversational):  # noqa: F811
    model, store_path, profiles = served
    policy, tokenizer = tiny_policy(tmp_path / "policy")
    reward = MRMRewardFunction(model, store_path, user_column="user_id")
    seen: list[tuple] = []

    def recorded(prompts, completions, **columns):
        rewards = reward(prompts, completions, **columns)
        seen.append((prompts, completions, columns["user_id"], rewards))
        return rewards

    recorded.__name__ = "mrm"  # TRL names its logged reward columns after the function
    prompts = ["write about one thing 1", "explain clouds"] * 2
    if conversational:
        prompts = [[{"role": "user", "content": p}] for p in prompts]
    dataset = datasets.Dataset.from_dict({"prompt": prompts, "user_id": ["u1", "u2", "u2", "u1"]})
    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2,
        max_completion_length=6, max_steps=1, report_to="none", use_cpu=True,
        save_strategy="no", logging_steps=1, bf16=False, seed=0,
    )  # fmt: skip
    trainer = trl.GRPOTrainer(
        model=policy, reward_funcs=[recorded], args=args, train_dataset=dataset,
        processing_class=tokenizer,
    )  # fmt: skip
    before = [p.detach().clone() for p in policy.parameters()]
    trainer.train()
    assert seen, "GRPOTrainer never called the reward"
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    for batch_prompts, completions, users, rewards in seen:
        assert set(users) <= {"u1", "u2"} and len(rewards) == len(completions)
        items = [text_input(p, c) for p, c in zip(batch_prompts, completions)]
        expected = model.score_items(items, [profiles[u] for u in users])
        assert rewards == pytest.approx(expected, abs=1e-6)
        if conversational:
            assert all(isinstance(c, list) and c[0]["role"] == "assistant" for c in completions)
    logged = trainer.state.log_history[0]
    assert "rewards/mrm/mean" in logged
