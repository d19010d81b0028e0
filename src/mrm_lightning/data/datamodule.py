"""The LightningDataModule: one preference source, split once, served as episodic user tasks."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from jsonargparse import lazy_instance
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from .checks import (
    FEW_VALIDATION_USERS,
    check_data_settings,
    check_episode_sizes,
    removal_cause,
)
from .episodes import EvalBatches, MetaTrainBatches
from .preferences import EmbeddingDtype, PreferenceData, PreferenceSource
from .sampling import Size, can_make_episode
from .sources.synthetic import SyntheticPopulation
from .splits import TEST, TRAIN, UNUSED, VAL, SplitSummary, split_pairs


class EpisodicDataModule(LightningDataModule):
    """Seen users become meta-training tasks; every user is evaluated on its held-out pairs.

    Args:
        source: where the preference data comes from (default: the synthetic population).
        users_per_batch: users per meta-batch on each process (the global meta-batch is this
            times the number of processes).
        support_size: support pairs per training episode, a count or a fraction of the user's
            training pairs. Match it to what users have at evaluation (see the method notes).
        support_size_min: when set, each episode's support size is drawn uniformly between
            this and ``support_size`` (counts), matching the range of training pairs users
            have when adapted (from 1 pair up to the unseen users' budget).
        query_size: query pairs per episode (count or fraction); None uses all the rest.
        eval_users_per_batch: users adapted together during validation and test.
        unseen_fraction: share of users held out of meta-training entirely.
        val_fraction: share of the units (posts, prompts, conversations) used for validation
            (model selection); units are assigned once for all users, so a text is on one side
            for everybody.
        test_fraction: share of the units held out for the final test.
        max_train_pairs_seen: cap on a seen user's training pairs (None: no cap).
        max_train_pairs_unseen: cap on an unseen user's training pairs: the few-shot budget.
        min_pairs_per_user: users with fewer pairs are dropped (and reported).
        min_units_per_user: users with fewer distinct units (PRISM: conversations) are dropped.
        use_given_split: keep the source's own train / test labels (the paper's TL;DR protocol:
            a worker's train-split pairs train, its validation-split pairs test); validation
            pairs are then carved from the training side.
        validation_users: share of the seen users held out of meta-training as validation
            users: adapted from their training pairs (capped like unseen users') and scored
            on their pairs in the validation units, exactly as new users are. Checkpoints and
            the adaptation strength are chosen on them. 0 validates on every user's validation
            pairs instead. Either way selection never reads a pair of a test unit: other users'
            labels on the test table's items never steer it (``val_fraction`` sets how much it
            has).
        users_without_train_pairs: an evaluated user left with no training pair (every unit it
            has is larger than its cap): ``exclude`` leaves it out of every row of the report,
            ``prior`` scores it with no adaptation (w0) in MRM's row; every method and baseline
            is scored on the same users and pairs either way.
        seed: seeds the user split, the pair split and the episode sampling.
    """

    def __init__(
        self,
        source: PreferenceSource = lazy_instance(SyntheticPopulation),
        users_per_batch: int = 16,
        support_size: Size = 20,
        support_size_min: int | None = None,
        query_size: Size | None = None,
        eval_users_per_batch: int = 128,
        unseen_fraction: float = 0.5,
        val_fraction: float = 0.15,
        test_fraction: float = 0.3,
        max_train_pairs_seen: int | None = None,
        max_train_pairs_unseen: int | None = 20,
        min_pairs_per_user: int = 10,
        min_units_per_user: int = 1,
        use_given_split: bool = False,
        validation_users: float = 0.0,
        users_without_train_pairs: Literal["exclude", "prior"] = "exclude",
        embedding_dtype: EmbeddingDtype = "float32",
        seed: int = 0,
    ) -> None:
        super().__init__()
        # the data settings sit beside the model's in TensorBoard's HPARAMS view; the source
        # by its class name (its own settings are in the run's config.yaml)
        self.save_hyperparameters(ignore=["source"])
        self.hparams["source"] = type(source).__name__
        check_data_settings(
            support_size, support_size_min, query_size, users_per_batch, eval_users_per_batch,
            val_fraction, test_fraction, users_without_train_pairs, embedding_dtype,
        )  # fmt: skip
        self.support_size_min = support_size_min
        self.users_without_train_pairs = users_without_train_pairs
        self.embedding_dtype = embedding_dtype
        self.source = source
        self.users_per_batch, self.support_size, self.query_size = (
            users_per_batch,
            support_size,
            query_size,
        )
        self.eval_users_per_batch = eval_users_per_batch
        self.split_settings = dict(
            unseen_fraction=unseen_fraction,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            max_train_pairs_seen=max_train_pairs_seen,
            max_train_pairs_unseen=max_train_pairs_unseen,
            min_pairs_per_user=min_pairs_per_user,
            min_units_per_user=min_units_per_user,
            use_given_split=use_given_split,
            validation_user_fraction=validation_users,
            seed=seed,
        )
        self.seed = seed
        self.data: PreferenceData | None = None
        self.split: SplitSummary | None = None
        self.pairs_by_split: dict[int, dict[int, Tensor]] = {}
        self.meta_train_users: Tensor | None = None  # seen users with an episode to draw
        #: (epoch, meta-batches done) read from a checkpoint: where a resumed fit continues
        self.resume_position: tuple[int, int] | None = None

    @property
    def embedding_dim(self) -> int:
        return self.source.embedding_dim

    # ------------------------------------------------------------------ set-up
    def prepare_data(self) -> None:
        """Encode and cache real text once (rank 0); synthetic sources have nothing to do."""
        prepare = getattr(self.source, "prepare", None)
        if callable(prepare):
            prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        source = self.source
        data = (
            source.load()
            if self.embedding_dtype == "float32"
            else source.load_as(self.embedding_dtype)
        )
        data = data.validate(origin=type(source).__name__)
        split = split_pairs(data, **self.split_settings)
        if len(split.dropped_users) == data.num_users:  # the first cause, not a later symptom
            raise ValueError(f"no user is left to train on: {removal_cause(split, data.num_users)}")
        self.data, self.split = data, split
        users = torch.cat([split.seen_users, split.unseen_users, split.validation_users])
        for part in (TRAIN, VAL, TEST):
            rows = (split.pair_split == part).nonzero().flatten()
            by_user = rows[torch.argsort(data.user[rows], stable=True)]
            counts = torch.bincount(data.user[by_user], minlength=data.num_users)
            chunks = torch.split(by_user, counts.tolist())
            self.pairs_by_split[part] = {int(u): chunks[u] for u in users}
        # validation users are scored on their validation-unit pairs only: their test-unit
        # pairs are items of the test table (units are shared across users), never selection's
        self.validation_queries = {
            int(u): self.pairs_by_split[VAL][int(u)] for u in split.validation_users
        }
        train = self.pairs_by_split[TRAIN]
        self.meta_train_users = torch.tensor(
            [u for u in split.seen_users.tolist() if can_make_episode(data.unit[train[u]])],
            dtype=torch.long,
        )
        settings = self.split_settings
        seen_only_evaluated = len(split.seen_users) - len(self.meta_train_users)
        rank_zero_info(
            f"{data.num_users} users: {len(split.seen_users)} seen, {len(split.unseen_users)} "
            f"unseen, {len(split.validation_users)} validation, {len(split.dropped_users)} "
            f"removed ({split.describe()}); pairs "
            "train/val/test/unused = "
            + "/".join(str(int((split.pair_split == p).sum())) for p in (TRAIN, VAL, TEST, UNUSED))
            + f" (units on one side for all users; {split.leak_guard_pairs} pairs unused for "
            "sharing a text across sides)"
            + (
                f"; {seen_only_evaluated} seen users have fewer than 2 training units and are "
                "evaluated but not meta-trained"
                if seen_only_evaluated
                else ""
            )
            + f"; min_pairs_per_user={settings['min_pairs_per_user']}"
        )
        if 0 < len(split.validation_users) < FEW_VALIDATION_USERS:
            rank_zero_warn(
                f"only {len(split.validation_users)} validation users choose the checkpoint and "
                "how strongly to adapt: with so few, MRM keeps the global model unless "
                "personalization wins by a wide margin (model.warm_start_alpha). Hold out more: "
                "raise data.validation_users (e.g. 0.3), or lower data.unseen_fraction"
            )
        for part, name in ((VAL, "validation"), (TEST, "test")):
            without = self.users_without_training(part)
            if without:
                rank_zero_info(
                    f"{without} {name} users have no training pair: "
                    + (
                        "excluded from every row"
                        if self.users_without_train_pairs == "exclude"
                        else "scored with the prior (no adaptation)"
                    )
                    + " (data.users_without_train_pairs)"
                )

    def _check_episode_sizes(self) -> None:
        """Fail before meta-training, naming the setting, when no episode can be drawn."""
        assert self.split is not None and self.meta_train_users is not None
        check_episode_sizes(
            self.split,
            self.data.num_users,
            self.meta_train_users,
            self.pairs_by_split[TRAIN],
            self.support_size,
        )

    # ------------------------------------------------------------- evaluation
    @property
    def has_validation_users(self) -> bool:
        return self.split is not None and len(self.split.validation_users) > 0

    def held_out(self, part: int) -> dict[int, Tensor]:
        """User -> held-out pairs scored for ``part``: TEST pairs of seen and unseen users;
        for VAL, the validation users' VAL pairs, or every user's VAL pairs without any."""
        assert self.split is not None
        if part == VAL and self.has_validation_users:
            return self.validation_queries
        scored = set(torch.cat([self.split.seen_users, self.split.unseen_users]).tolist())
        return {u: rows for u, rows in self.pairs_by_split[part].items() if u in scored}

    def eval_users(self, part: int) -> list[int]:
        """The users scored on ``part`` (VAL or TEST): the same list for MRM and every
        baseline. A user needs a held-out pair there, and a training pair unless
        ``users_without_train_pairs`` is ``prior``."""
        train = self.pairs_by_split[TRAIN]
        prior = self.users_without_train_pairs == "prior"
        return sorted(
            u for u, pairs in self.held_out(part).items() if len(pairs) and (prior or len(train[u]))
        )

    def users_without_training(self, part: int) -> int:
        """How many users with held-out pairs in ``part`` have no training pair."""
        train = self.pairs_by_split[TRAIN]
        return sum(
            1 for u, pairs in self.held_out(part).items() if len(pairs) and not len(train[u])
        )

    def validation_pairs(self) -> PreferenceData:
        """The pairs validation scores (of :meth:`eval_users` ``(VAL)``), for baselines."""
        assert self.data is not None
        held_out = self.held_out(VAL)
        users = self.eval_users(VAL)
        rows = (
            torch.cat([held_out[u] for u in users]) if users else torch.empty(0, dtype=torch.long)
        )
        return self.data.subset(rows)

    # ------------------------------------------------------------ resuming
    def state_dict(self) -> dict:
        """Saved in every checkpoint: how far meta-training has gone through the current epoch.

        Episodes depend only on ``(seed, epoch, user)``, so this position is all a resumed run
        needs to draw the same remaining meta-batches. It is the trainer's own count of the
        training batches finished in the epoch in progress (none between epochs).
        """
        trainer = self.trainer
        if trainer is None:
            return {}
        epochs = trainer.fit_loop.epoch_progress.current
        in_epoch = epochs.started > epochs.completed  # from its first batch to its end hooks
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed if in_epoch else 0
        return {"train_position": {"epoch": trainer.current_epoch, "batches_done": done}}

    def load_state_dict(self, state_dict: dict) -> None:
        """Resuming a fit: :meth:`train_dataloader` skips the meta-batches already trained on."""
        position = state_dict.get("train_position")
        if position is not None:
            self.resume_position = (int(position["epoch"]), int(position["batches_done"]))
            # Lightning warns that a loader without state_dict cannot resume mid-epoch; this
            # one resumes through the data module, so the warning would be wrong here
            warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")

    def teardown(self, stage: str) -> None:
        if stage == "fit":
            self.resume_position = None  # a later fit starts where it is told, not here

    # ----------------------------------------------------------- dataloaders
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        # Meta-batches of pair differences (chosen minus rejected) where the model being fitted
        # asks for them: MetaRewardModel.reads_pair_differences (linear base functions).
        model = self.trainer.lightning_module if self.trainer is not None else None
        return self.meta_train_loader(getattr(model, "reads_pair_differences", False))

    def meta_train_loader(self, differences: bool = False) -> DataLoader:
        """The meta-training batches; with ``differences``, gathered straight into a packed
        :class:`~mrm_lightning.data.batch.PairBatch` of chosen-minus-rejected embeddings (one row
        per real pair; :mod:`.gathering`), else padded chosen / rejected batches."""
        assert self.data is not None and self.split is not None
        self._check_episode_sizes()
        rank, world = self._rank_world()
        tasks = MetaTrainBatches(
            self.data,
            self.pairs_by_split[TRAIN],
            self.meta_train_users,
            self.users_per_batch,
            self.support_size,
            self.query_size,
            self.seed,
            epoch=lambda: self.trainer.current_epoch if self.trainer is not None else 0,
            rank=rank,
            world_size=world,
            support_size_min=self.support_size_min,
            resume=self.resume_position,
            differences=differences,
        )
        if len(tasks) == 0:
            raise ValueError(
                f"data.users_per_batch={self.users_per_batch} x {world} process(es) exceeds the "
                f"{len(self.meta_train_users)} seen users that have episodes"
            )
        # its own generator: creating an iterator then draws no number from the global torch
        # generator, whose state a checkpoint carries (mrm_lightning.training.checkpointing)
        return DataLoader(tasks, batch_size=None, generator=self._loader_generator())

    def _eval_dataloader(self, held_out: int) -> DataLoader:
        assert self.data is not None and self.split is not None
        rank, world = self._rank_world()
        users = EvalBatches(
            self.data,
            self.pairs_by_split[TRAIN],
            self.held_out(held_out),
            self.eval_users(held_out),
            self.split.seen_users,
            self.eval_users_per_batch,
            rank=rank,
            world_size=world,
        )
        return DataLoader(users, batch_size=None, generator=self._loader_generator())

    def _loader_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def val_dataloader(self) -> DataLoader:
        return self._eval_dataloader(VAL)

    def test_dataloader(self) -> DataLoader:
        return self._eval_dataloader(TEST)

    # ------------------------------------------------------- for baselines
    def pairs(self, part: int, users: Tensor | list[int] | None = None) -> PreferenceData:
        """The pairs of one split (TRAIN / VAL / TEST), optionally of some users only."""
        assert self.data is not None and self.split is not None
        mask = self.split.pair_split == part
        if users is not None:
            mask &= torch.isin(self.data.user, torch.as_tensor(users, dtype=torch.long))
        return self.data.subset(mask.nonzero().flatten())
