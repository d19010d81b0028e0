"""For every source: no text of a validation or test pair is in any user's training pairs.

Units (posts, prompts, conversations, groups of rated texts) are assigned to a side once for all
users. These tests build each source through the data module, with users who share posts,
prompts and rated texts, and look at the TEXTS behind the pairs, not only at the unit ids.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import mrm_lightning
from mrm_lightning import EpisodicDataModule
from mrm_lightning.data.splits import TEST, TRAIN, VAL
from tests.data.test_tldr_and_protocols import FIXTURE as TLDR_FIXTURE
from tests.data.test_tldr_and_protocols import StubEncoder


def prism_file(path: Path, seed: int = 0) -> Path:
    """PRISM-format conversations: 10 users x 6 conversations of 2 turns; opening prompts and
    responses come from small shared sets, so identical texts recur across users."""
    rng = random.Random(seed)
    lines = []
    for user in range(10):
        for conversation in range(6):
            history = []
            for turn in range(2):
                prompt = f"question {rng.randrange(8)}" if turn == 0 else f"follow up {turn}"
                history.append({"turn": turn, "role": "user", "content": prompt})
                answers = rng.sample(range(5), 2)
                for index, answer in enumerate(answers):
                    history.append(
                        {
                            "turn": turn,
                            "role": "model",
                            "content": f"reply {answer}",
                            "if_chosen": index == 0,
                            "within_turn_id": index,
                            "score": 50,
                        }
                    )
            lines.append(
                {
                    "conversation_id": f"c{user}-{conversation}",
                    "user_id": f"user{user}",
                    "conversation_history": history,
                }
            )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def shared_pairs_file(path: Path, seed: int = 0) -> Path:
    """12 users judging responses to 30 shared prompts: most prompts have several judges."""
    rng = random.Random(seed)
    lines = []
    for user in range(12):
        for prompt in rng.sample(range(30), 15):
            a, b = rng.sample(range(6), 2)
            lines.append(
                {
                    "user_id": f"u{user}",
                    "prompt": f"prompt {prompt}",
                    "chosen": f"answer {a} to {prompt}",
                    "rejected": f"answer {b} to {prompt}",
                }
            )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def shared_ratings_file(path: Path, seed: int = 0) -> Path:
    """12 raters scoring overlapping subsets of 60 short texts, no prompts."""
    rng = random.Random(seed)
    lines = ["user_id,text,score"]
    for user in range(12):
        for text in rng.sample(range(60), 30):
            lines.append(f"r{user},Text number {text}.,{rng.randint(1, 5)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def text_source(kind: str, tmp_path: Path):
    common = dict(encoder=StubEncoder(), cache_dir=str(tmp_path / "cache"), progress=False)
    if kind == "tldr":
        return mrm_lightning.RedditTLDR(paths=[str(TLDR_FIXTURE)], **common), {
            "use_given_split": True
        }
    if kind == "prism":
        conversations = str(prism_file(tmp_path / "conversations.jsonl"))
        return mrm_lightning.PRISM(conversations=conversations, **common), {}
    if kind == "pairs":
        return mrm_lightning.PairsFiles(
            [str(shared_pairs_file(tmp_path / "p.jsonl"))], **common
        ), {}
    if kind == "ratings":
        path = shared_ratings_file(tmp_path / "r.csv")
        return mrm_lightning.RatingsFiles([str(path)], item_groups=12, **common), {}
    raise AssertionError(kind)


def held_out_and_train_items(dm, records):
    """(history, prompt, response) of the training pairs, and of the held-out pairs."""

    def items(part):
        found = set()
        for rows in dm.pairs_by_split[part].values():
            for row in rows.tolist():
                r = records[row]
                found |= {(r.history, r.prompt, r.chosen), (r.history, r.prompt, r.rejected)}
        return found

    return items(TRAIN), items(VAL), items(TEST)


@pytest.mark.parametrize("kind", ["tldr", "prism", "pairs", "ratings"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_held_out_text_is_in_any_training_pair(kind, seed, tmp_path):
    source, protocol = text_source(kind, tmp_path)
    dm = EpisodicDataModule(
        source,
        users_per_batch=1,
        support_size=1,
        val_fraction=0.2,
        test_fraction=0.3,
        min_pairs_per_user=1,
        seed=seed,
        **protocol,
    )
    dm.setup("fit")
    records = source.records()
    train, val, test = held_out_and_train_items(dm, records)
    assert train and test
    assert train.isdisjoint(val) and train.isdisjoint(test) and val.isdisjoint(test)
    responses = {
        part: {item[2] for item in items}
        for part, items in ((TRAIN, train), (VAL, val), (TEST, test))
    }
    prompts = {
        part: {item[1] for item in items if item[1]}
        for part, items in ((TRAIN, train), (VAL, val), (TEST, test))
    }
    if kind == "ratings":  # the rated text itself is the unit of leakage
        assert responses[TRAIN].isdisjoint(responses[TEST] | responses[VAL])
    if kind in ("tldr", "pairs"):  # a post / a prompt is on one side for everybody
        assert prompts[TRAIN].isdisjoint(prompts[TEST] | prompts[VAL])
    # and the same at the level of embedding rows, whatever the source
    data = dm.data
    rows = {
        part: set(
            torch.cat([data.chosen[r] for r in dm.pairs_by_split[part].values()]).tolist()
            + torch.cat([data.rejected[r] for r in dm.pairs_by_split[part].values()]).tolist()
        )
        for part in (TRAIN, VAL, TEST)
    }
    assert rows[TRAIN].isdisjoint(rows[VAL] | rows[TEST]) and rows[VAL].isdisjoint(rows[TEST])


def test_shared_posts_really_are_shared_in_the_fixtures(tmp_path):
    """The check above is only meaningful if users do share units: make sure they do."""
    source, _ = text_source("pairs", tmp_path)
    data = source.load()
    judges = torch.unique(torch.stack([data.unit, data.user]), dim=1)[0]
    assert int(torch.bincount(judges).max()) >= 3  # some prompt has 3 or more judges
