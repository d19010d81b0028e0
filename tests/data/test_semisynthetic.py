"""The semi-synthetic source: real-format texts, simulated users with known true rewards.

A small fake TL;DR file (invented posts, 2-4 summaries each of varied lengths) and a hash
encoder of size 16 stand in for the real slice and MiniLM; everything runs offline.
"""

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from mrm_lightning import EpisodicDataModule, RedditTLDR
from mrm_lightning.data.sources.semisynthetic import (
    SemiSyntheticUsers,
    candidate_comparisons,
    centred_unit_directions,
    difference_rms,
    length_feature,
    length_signs,
    principal_directions,
)
from mrm_lightning.data.sources.text import index_texts
from mrm_lightning.training.lightning_cli import cli_main
from tests.conftest import REPO

NUM_POSTS = 24
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


class HashEncoder:
    """A deterministic 16-d vector per (history, prompt, response); counts what it encodes."""

    embedding_dim = 16

    def __init__(self):
        self.encoded = 0

    def identity(self):
        return {"model": "hash-16"}

    def encode(self, items, progress=True):
        self.encoded += len(items)
        digests = [hashlib.sha256(json.dumps(item).encode()).digest() for item in items]
        return torch.tensor([[b / 255.0 - 0.5 for b in d[:16]] for d in digests])


def summary_text(post: int, index: int) -> str:
    count = [3, 9, 20, 40][index]  # varied lengths within every post
    return " " + " ".join(WORDS[(post + index + k) % len(WORDS)] for k in range(count))


def write_fake_tldr(path: Path) -> Path:
    """Post p has 2 + p % 3 summaries, compared in a chain (0-1, 1-2, ...) by two workers."""
    rows = []
    for post in range(NUM_POSTS):
        info = {"id": f"t3_p{post:03d}", "post": f"Post body {post}.", "title": f"T{post}"}
        info["subreddit"] = "test"
        summaries = [{"text": summary_text(post, i)} for i in range(2 + post % 3)]
        for i in range(len(summaries) - 1):
            rows.append(
                {
                    "info": info,
                    "summaries": summaries[i : i + 2],
                    "choice": post % 2,
                    "worker": f"worker{(post + i) % 2}",
                    "split": "train",
                }
            )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def texts(tmp_path):
    return RedditTLDR(
        paths=[str(write_fake_tldr(tmp_path / "fake.jsonl"))],
        encoder=HashEncoder(),
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )


def users(texts, **settings):
    defaults = dict(num_users=40, min_pairs=10, max_pairs=20, seed=0)
    return SemiSyntheticUsers(texts, **{**defaults, **settings})


# --- pure functions, by hand -----------------------------------------------------------------


def test_length_feature_by_hand():
    # word counts 1, 1, 4, 4: logs 0, 0, log 4, log 4; mean log 2, population std log 2
    got = length_feature(["a", " b ", "a b c d", "one two three four"])
    assert torch.allclose(got, torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    assert torch.equal(length_feature(["x y", "z w"]), torch.zeros(2))  # all equal: 0
    assert torch.equal(length_feature(["", "a"]), torch.zeros(2))  # an empty text counts as 1
    # counts 1, 2, 4: logs 0, l, 2l (l = log 2): mean l, std l * sqrt(2/3)
    assert torch.allclose(
        length_feature(["a", "a b", "a b c d"]), torch.tensor([-1.0, 0, 1.0]) * math.sqrt(1.5)
    )


def test_centred_unit_directions_by_hand():
    # mean (2/3, 2/3): centred rows (1, -2)/3, (-2, 1)/3, (1, 1)/3, then unit length
    got = centred_unit_directions(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    expected = torch.tensor(
        [[1 / 5**0.5, -2 / 5**0.5], [-2 / 5**0.5, 1 / 5**0.5], [1 / 2**0.5, 1 / 2**0.5]]
    )
    assert torch.allclose(got, expected)


def test_length_signs_and_difference_rms_by_hand():
    assert length_signs(4).tolist() == [1.0, -1.0, 0.0, 0.0]
    assert length_signs(3).sum() == 0  # the length rule has no global component
    # differences -1 and -2: RMS sqrt((1 + 4) / 2)
    got = difference_rms(torch.tensor([0.0, 1.0, 3.0]), torch.tensor([0, 1]), torch.tensor([1, 2]))
    assert got == pytest.approx(2.5**0.5)


def test_candidate_comparisons_are_every_pair_within_a_group():
    first, second = candidate_comparisons(["a", "b", "a", "a", "b", "c"])
    assert list(zip(first.tolist(), second.tolist())) == [(0, 2), (0, 3), (2, 3), (1, 4)]
    empty = candidate_comparisons(["a", "b"])
    assert empty[0].numel() == 0 and empty[0].dtype == torch.long


# --- the source ------------------------------------------------------------------------------


def test_same_seed_same_data_another_seed_different(texts):
    first, again, other = users(texts).load(), users(texts).load(), users(texts, seed=1).load()
    for name in ("user", "chosen", "rejected", "unit", "oracle_margin"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert first.user_ids == again.user_ids
    assert first.num_pairs != other.num_pairs or not torch.equal(first.chosen, other.chosen)


def test_users_are_named_by_type_and_dealt_in_turn(texts):
    source = users(texts, num_users=8, num_types=3)
    data = source.load()
    assert data.user_ids[:4] == [
        "semisyn-type0-0000",
        "semisyn-type1-0001",
        "semisyn-type2-0002",
        "semisyn-type0-0003",
    ]
    assert source.truth.user_type.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    counts = torch.bincount(data.user, minlength=8)
    assert ((counts >= 10) & (counts <= 20)).all()


def test_pairs_answer_one_prompt_and_keep_the_real_post_as_unit(texts):
    data = users(texts).load()
    records = texts.records()
    items = index_texts(records)[0]
    post_of_prompt = {r.prompt: r.unit for r in records}
    unit_ids = list(dict.fromkeys(r.unit for r in records))  # the text source's unit ids
    for chosen, rejected, unit in zip(data.chosen, data.rejected, data.unit):
        history, prompt, response = items[chosen]
        assert (history, prompt) == items[rejected][:2] and response != items[rejected][2]
        assert unit_ids[unit] == post_of_prompt[prompt]
    # post p has 2 + p % 3 summaries: 1, 3 or 6 candidate comparisons, 80 in all
    assert len({(int(c), int(r)) for c, r in zip(data.chosen, data.rejected)}) > NUM_POSTS
    assert len(data.unit.unique()) == NUM_POSTS


def test_embeddings_are_the_text_source_table(texts):
    loaded = {}
    text_load = texts.load

    def spy():
        loaded["data"] = text_load()
        return loaded["data"]

    texts.load = spy
    data = users(texts, length_in_inputs=False).load()
    assert data.embeddings is loaded["data"].embeddings  # shared, not copied
    assert users(texts, length_in_inputs=False).embedding_dim == 16


def test_length_in_inputs_appends_the_length_feature(texts):
    source = users(texts)
    data = source.load()
    assert source.embedding_dim == 17 and data.embeddings.shape[1] == 17
    real = texts.load().embeddings
    rows = torch.arange(len(real))
    assert torch.equal(data.embeddings[:, :16], real[rows].float())
    assert torch.equal(data.embeddings[:, 16], source.truth.length)
    # the oracle is unchanged by what the models are shown
    other = users(texts, length_in_inputs=False).load()
    assert torch.equal(data.oracle_margin, other.oracle_margin)


def test_principal_directions_by_hand():
    # differences along x (spread 3) and y (spread 1): the leading direction is x, then y
    differences = torch.tensor([[3.0, 0.0, 0.0], [-3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    leading = principal_directions(differences, 2)
    assert leading.shape == (3, 2)
    assert torch.allclose(leading.abs(), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    assert torch.equal(principal_directions(differences, 0), torch.eye(3))  # the whole space


def test_tastes_lie_in_the_leading_principal_span(texts):
    source = users(texts, taste_rank=3, individual_spread=0.5)
    source.load()
    vectors = source.truth.user_vector  # [N, 16]: shared + type + individual directions
    assert torch.linalg.matrix_rank(vectors, atol=1e-4) == 3  # 40 users' tastes in 3 dims
    whole = users(texts, taste_rank=0, individual_spread=0.5)
    whole.load()
    assert torch.linalg.matrix_rank(whole.truth.user_vector, atol=1e-4) == 16


def test_prepare_encodes_once_through_the_text_source(texts):
    source = users(texts)
    source.prepare()
    assert texts.encoder.encoded == 2 * NUM_POSTS + sum(p % 3 for p in range(NUM_POSTS))
    source.load()
    assert texts.encoder.encoded == 2 * NUM_POSTS + sum(p % 3 for p in range(NUM_POSTS))


def test_oracle_margin_is_the_true_reward_difference(texts):
    source = users(texts, sharpness=1.7, length_in_inputs=False)
    data = source.load()
    truth = source.truth
    items = index_texts(texts.records())[0]
    assert torch.allclose(truth.length, length_feature([response for *_, response in items]))
    emb, user = data.embeddings, data.user
    # r_u(h, text) = sharpness * (h . v_u + c_u * len(text)), so for a pair:
    taste = ((emb[data.chosen] - emb[data.rejected]) * truth.user_vector[user]).sum(-1)
    length = truth.length_coef[user] * (truth.length[data.chosen] - truth.length[data.rejected])
    assert torch.allclose(data.oracle_margin, 1.7 * (taste + length), atol=1e-5)


def test_each_term_is_scaled_to_unit_rms_over_the_candidates(texts):
    items = index_texts(texts.records())[0]
    first, second = candidate_comparisons([(h, p) for h, p, _ in items])  # one unit per prompt
    for weight in ("direction_weight", "shared_weight", "individual_spread"):
        settings = dict(shared_weight=0.0, direction_weight=0.0, individual_spread=0.0)
        source = users(texts, length_weight=0.0, **{**settings, weight: 2.0})
        source.load()
        emb = source.texts.load().embeddings
        taste = emb[torch.arange(len(items))] @ source.truth.user_vector.T  # [R, N]
        assert torch.allclose(difference_rms(taste, first, second), torch.full((40,), 2.0))
    source = users(texts, shared_weight=0.0, direction_weight=0.0, individual_spread=0.0)
    source.load()
    length_rms = difference_rms(source.truth.length, first, second)
    assert torch.allclose(source.truth.length_coef * length_rms, length_signs(4).repeat(10))


def test_types_disagree(texts):
    # the length rule alone: type 0 prefers the longer summary, type 1 the shorter, others tie
    source = users(texts, shared_weight=0.0, direction_weight=0.0, individual_spread=0.0)
    data = source.load()
    longer = source.truth.length[data.chosen] - source.truth.length[data.rejected]
    kind = source.truth.user_type[data.user]
    differs = longer != 0
    assert differs.sum() > 100
    margin_sign = torch.sign(data.oracle_margin)
    assert (margin_sign[differs & (kind == 0)] == torch.sign(longer[differs & (kind == 0)])).all()
    assert (margin_sign[differs & (kind == 1)] == -torch.sign(longer[differs & (kind == 1)])).all()
    assert (data.oracle_margin[kind >= 2] == 0).all()
    # the type directions alone: on the same comparisons, types mostly disagree
    source = users(texts, shared_weight=0.0, length_weight=0.0, individual_spread=0.0)
    source.load()
    items = index_texts(texts.records())[0]
    first, second = candidate_comparisons([(h, p) for h, p, _ in items])
    emb = texts.load().embeddings
    per_type = (emb[first] - emb[second]) @ source.truth.user_vector[:4].T  # [C, 4]
    agree = (torch.sign(per_type)[:, :, None] == torch.sign(per_type)[:, None, :]).float().mean(0)
    off_diagonal = agree[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.mean() < 0.5


def test_labels_follow_bradley_terry(texts):
    # near-noiseless: the chosen response always has the higher true reward
    sharp = users(texts, sharpness=1e4).load()
    assert (sharp.oracle_margin > 0).all()
    # moderate: P(chosen has the higher reward) = sigmoid(|margin|), within 3 standard errors
    data = users(texts, num_users=200, min_pairs=40, max_pairs=60, sharpness=1.0).load()
    expected = torch.sigmoid(data.oracle_margin.abs())
    observed = (data.oracle_margin > 0).float().mean()
    error = (expected * (1 - expected)).sum().sqrt() / data.num_pairs
    assert abs(observed - expected.mean()) < 3 * error
    assert 0.6 < observed < 0.95  # noisy labels, yet informative


def test_bad_settings_are_refused(texts):
    with pytest.raises(ValueError, match="num_types"):
        users(texts, num_types=2)
    with pytest.raises(ValueError, match="min_pairs"):
        users(texts, min_pairs=30, max_pairs=20)


def test_episodic_datamodule_yields_a_train_batch(texts):
    module = EpisodicDataModule(
        source=users(texts, num_users=12),
        users_per_batch=4,
        support_size=3,
        unseen_fraction=0.5,
        max_train_pairs_unseen=5,
        min_pairs_per_user=4,
    )
    module.prepare_data()
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["support_chosen"].shape[0] == 4 and batch["support_chosen"].shape[-1] == 17
    assert "query_oracle_margin" in batch
    assert batch["query_oracle_margin"].shape == batch["query_mask"].shape


def test_config_parses(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["mrm"])  # pytest's own arguments are not the CLI's
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(REPO / "configs/semisynthetic.yaml"), "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    source = config["data"]["source"]
    assert source["class_path"] == "mrm_lightning.SemiSyntheticUsers"
    assert source["init_args"]["texts"]["class_path"] == "mrm_lightning.RedditTLDR"
    assert source["init_args"]["num_types"] == config["model"]["num_base_rewards"] == 4
    assert config["data"]["use_given_split"] is False
