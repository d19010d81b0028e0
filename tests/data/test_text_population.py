"""The built-in text population: templated responses, typed users with known true rewards.

Everything runs offline with a hash stub encoder (4-d) instead of MiniLM.
"""

import re

import pytest
import torch
import yaml

from mrm_lightning import EpisodicDataModule
from mrm_lightning.data.sources.text import index_texts
from mrm_lightning.data.sources.text_bank import ALL_ATTRIBUTES, TOPICS, Attributes, render
from mrm_lightning.data.sources.text_population import TASTES, TextPopulation
from mrm_lightning.data.splits import TEST, TRAIN, VAL
from mrm_lightning.training.lightning_cli import cli_main
from tests.conftest import REPO
from tests.data.test_tldr_and_protocols import StubEncoder


def population(tmp_path, **settings) -> TextPopulation:
    defaults = dict(num_users=16, min_pairs=20, max_pairs=30, num_prompts=6)
    return TextPopulation(
        **{**defaults, **settings},
        encoder=StubEncoder(),
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )


def test_attribute_codes_and_rendering():
    assert Attributes.from_code(0) == Attributes()
    assert Attributes.from_code(0b10101) == Attributes(long=True, example=True, bullets=True)
    assert len(set(ALL_ATTRIBUTES)) == 32
    topic = TOPICS[0]  # "Suggest a name for a cat."
    short = render(topic, Attributes(formal=True), variant=0)
    assert short == "The answer is as follows. I would call the cat Miso."
    casual = render(topic, Attributes(), variant=0)
    assert casual == "Eh, easy. I'd call the cat Miso. That's it."  # contractions when casual
    full = render(topic, Attributes(*[True] * 5), variant=0)
    assert full.startswith("Thank you for your question; I would be glad to help.")
    assert "\n1. Miso.\n2. Pepper.\n3. Biscuit.\n" in full
    assert "Here is why: A short name" in full and "One more tip: Say it" in full
    assert "For example, a shy ginger cat" in full
    assert "\n- Miso\n- Pepper\n- Biscuit" in render(topic, Attributes(bullets=True))


def test_every_prompt_has_32_distinct_responses_independent_of_the_seed(tmp_path):
    one, other = population(tmp_path, seed=0), population(tmp_path, seed=1)
    for p in range(len(TOPICS)):
        responses = one.responses(p)
        assert [a for a, _ in responses] == ALL_ATTRIBUTES
        assert len({text for _, text in responses}) == 32
        assert responses == other.responses(p)


def test_records_are_well_formed(tmp_path):
    pop = population(tmp_path)
    records = pop.records()
    prompts = [t.prompt for t in TOPICS[:6]]
    texts = {t.prompt: {text for _, text in pop.responses(i)} for i, t in enumerate(TOPICS[:6])}
    assert pop.summary.kept == len(records)
    for record in records:
        assert record.chosen != record.rejected
        assert record.prompt in prompts and record.unit == record.prompt
        assert {record.chosen, record.rejected} <= texts[record.prompt]  # both answer it
        assert record.history == () and record.split is None
    users = [r.user for r in records]
    assert list(dict.fromkeys(users)) == [
        f"{list(TASTES)[u % 4]}-{u:03d}" for u in range(16)
    ]  # readable ids, types dealt in turn
    assert all(re.fullmatch(r"(concise|detailed|formal|friendly)-\d{3}", u) for u in users)
    for user in set(users):
        mine = [r for r in records if r.user == user]
        assert 20 <= len(mine) <= 30
        pairs = [(r.prompt, *sorted((r.chosen, r.rejected))) for r in mine]
        assert len(set(pairs)) == len(pairs)  # a user never judges the same pair twice


def test_same_seed_same_records_another_seed_different(tmp_path):
    assert population(tmp_path, seed=3).records() == population(tmp_path, seed=3).records()
    assert population(tmp_path, seed=3).records() != population(tmp_path, seed=4).records()


def test_types_disagree_on_the_attributes_they_care_about(tmp_path):
    pop = population(tmp_path, individual_spread=0.0, sharpness=1.0)
    responses = dict(pop.responses(0))
    prompt = TOPICS[0].prompt

    def gain(user: str, **change) -> float:  # true reward of one attribute turned on
        on, off = responses[Attributes(**change)], responses[Attributes()]
        return pop.true_reward(user, prompt, on) - pop.true_reward(user, prompt, off)

    concise, detailed, formal, friendly = (
        "concise-000",
        "detailed-001",
        "formal-002",
        "friendly-003",
    )
    assert gain(concise, long=True) == pytest.approx(-2.0)
    assert gain(detailed, long=True) == pytest.approx(2.0)
    assert gain(formal, formal=True) == pytest.approx(2.0)
    assert gain(friendly, formal=True) == pytest.approx(-1.0)
    assert gain(friendly, warm=True) == pytest.approx(2.0) and gain(formal, warm=True) < 0
    # with individual deviations, the recorded true margins still split by type
    spread = population(tmp_path, individual_spread=0.3, num_users=40)
    data, records = spread.load(), spread.records()
    long_row = torch.tensor(
        ["Here is why:" in r.chosen for r in records], dtype=torch.float
    ) - torch.tensor(["Here is why:" in r.rejected for r in records], dtype=torch.float)
    by_type = {}
    for name in ("concise", "detailed"):
        mask = torch.tensor([r.user.startswith(name) for r in records]) & (long_row != 0)
        # the true margin of the longer response, chosen or not: negative for concise users
        by_type[name] = (data.oracle_margin[mask] * long_row[mask]).mean()
    assert by_type["concise"] < -1.0 < 1.0 < by_type["detailed"]


def test_labels_follow_bradley_terry(tmp_path):
    # near-noiseless: the chosen response always has the higher true reward
    sharp = population(tmp_path, sharpness=1e4).load()
    assert (sharp.oracle_margin > 0).all()
    # moderate: P(chosen has the higher reward) = sigmoid(|margin|), within 3 standard errors
    data = population(tmp_path, num_users=100, sharpness=1.0).load()
    expected = torch.sigmoid(data.oracle_margin.abs())
    observed = (data.oracle_margin > 0).float().mean()
    error = (expected * (1 - expected)).sum().sqrt() / data.num_pairs
    assert abs(observed - expected.mean()) < 3 * error
    assert 0.6 < observed < 0.95  # noisy labels, yet informative


def test_oracle_margin_matches_the_records_and_rows(tmp_path):
    pop = population(tmp_path)
    data, records = pop.load(), pop.records()
    assert data.num_pairs == len(records) and data.embeddings.shape[1] == 4
    assert data.user_ids == list(dict.fromkeys(r.user for r in records))
    for i in (0, 7, len(records) - 1):
        r = records[i]
        expected = pop.true_reward(r.user, r.prompt, r.chosen)
        expected -= pop.true_reward(r.user, r.prompt, r.rejected)
        assert float(data.oracle_margin[i]) == pytest.approx(expected)
    # the same margins from the embedding rows: rows carry their texts' attributes
    items = index_texts(records)[0]
    attributes = torch.tensor([pop.response_attributes[(p, t)] for _, p, t in items]).float()
    weights = torch.stack([pop.user_weights[u] for u in data.user_ids])
    by_rows = ((attributes[data.chosen] - attributes[data.rejected]) * weights[data.user]).sum(-1)
    torch.testing.assert_close(data.oracle_margin, by_rows)


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="num_types"):
        population(tmp_path, num_types=5)
    with pytest.raises(ValueError, match="min_pairs"):
        population(tmp_path, min_pairs=30, max_pairs=20)
    with pytest.raises(ValueError, match="num_prompts"):
        population(tmp_path, num_prompts=1)


def test_episodic_datamodule_keeps_each_prompt_on_one_side(tmp_path):
    module = EpisodicDataModule(
        source=population(tmp_path, num_prompts=10),
        users_per_batch=4,
        support_size=5,
        max_train_pairs_unseen=10,
        validation_users=0.2,
    )
    module.prepare_data()
    module.setup("fit")
    data, split = module.data, module.split
    for unit in data.unit.unique():
        sides = split.pair_split[data.unit == unit].unique()
        assert len(sides[torch.isin(sides, torch.tensor([TRAIN, VAL, TEST]))]) <= 1
    batch = next(iter(module.train_dataloader()))
    assert batch["support_chosen"].shape[0] == 4 and batch["support_chosen"].shape[-1] == 4
    assert batch["query_oracle_margin"].shape == batch["query_mask"].shape


def test_config_parses(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["mrm"])  # pytest's own arguments are not the CLI's
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(REPO / "configs/text.yaml"), "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    source = config["data"]["source"]
    assert source["class_path"] == "mrm_lightning.TextPopulation"
    assert source["init_args"]["num_types"] == config["model"]["num_base_rewards"] == 4
    assert config["trainer"]["logger"]["init_args"]["name"] == "text"
