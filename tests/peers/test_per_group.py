"""One model per group (peers/per_group.py): on two opposed groups known from a users file, a
model per group does what no single global model can; users without a group get everybody's."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer

from mrm_lightning import EpisodicDataModule
from mrm_lightning.data.preferences import PreferenceData, PreferenceSource
from mrm_lightning.peers import GlobalRewardModel, PerGroupModel
from mrm_lightning.peers.per_group import read_groups

D = 6


class OpposedGroups(PreferenceSource):
    """40 users; even users prefer texts along +t, odd users along -t (plus a little noise)."""

    embedding_dim = D

    def load(self) -> PreferenceData:
        gen = torch.Generator().manual_seed(0)
        taste = torch.nn.functional.normalize(torch.randn(D, generator=gen), dim=0)
        table = torch.randn(2400, D, generator=gen)
        user, chosen, rejected = [], [], []
        for u in range(40):
            sign = 1.0 if u % 2 == 0 else -1.0
            tastes = sign * taste + 0.1 * torch.randn(D, generator=gen)
            for p in range(30):
                a, b = 60 * u + 2 * p, 60 * u + 2 * p + 1
                better = bool(table[a] @ tastes > table[b] @ tastes)
                user.append(u)
                chosen.append(a if better else b)
                rejected.append(b if better else a)
        pairs = len(user)
        return PreferenceData(
            embeddings=table,
            user=torch.tensor(user),
            chosen=torch.tensor(chosen),
            rejected=torch.tensor(rejected),
            unit=torch.arange(pairs),
            user_ids=[f"u{u}" for u in range(40)],
        )


def test_read_groups_names_a_missing_column(tmp_path):
    path = tmp_path / "users.csv"
    path.write_text("user_id,side\nu0,left\nu1,\n")
    assert read_groups(str(path), "user_id", "side") == {"u0": "left"}  # blank: no group
    with pytest.raises(ValueError, match=r"users.csv: no column 'politics'"):
        read_groups(str(path), "user_id", "politics")


def test_a_model_per_group_fits_opposed_groups(tmp_path):
    users = tmp_path / "users.csv"
    users.write_text("user_id,side\n" + "".join(f"u{u},{'ab'[u % 2]}\n" for u in range(38)))
    accuracy = {}
    for name, model in (
        ("global", GlobalRewardModel(embedding_dim=D)),
        ("per_group", PerGroupModel(embedding_dim=D, groups=str(users), group_by="side")),
    ):
        dm = EpisodicDataModule(
            OpposedGroups(), users_per_batch=4, support_size=5, validation_users=0.2
        )
        trainer = Trainer(
            accelerator="cpu", max_epochs=1, limit_train_batches=1, num_sanity_val_steps=0,
            inference_mode=False, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        trainer.fit(model, datamodule=dm)
        trainer.test(model, datamodule=dm, verbose=False)
        accuracy[name] = float(trainer.callback_metrics["test_unseen/user_acc"])
    assert accuracy["global"] < 0.65  # one reward cannot serve both sides
    assert accuracy["per_group"] > 0.85
    assert model.group_names == ["a", "b"]
    # u38 and u39 are in no group: everybody's model (the last row)
    assert model.user_row[38] == model.user_row[39] == len(model.group_names)
    # a fresh module takes the fitted tables' sizes from a checkpoint's state dict
    fresh = PerGroupModel(embedding_dim=D, groups=str(users), group_by="side")
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.directions, model.directions)
