"""Benchmark: where meta-training and evaluation time goes, measured side by side in one run.

On a synthetic population of the chosen size, served by the framework's own
``EpisodicDataModule``, one run measures (medians over ``--repeats``; ratios taken inside the
run, since these machines are noisy):

1. Meta-training, one epoch of meta-batches per repeat. Each batch comes from the data module's
   ``train_dataloader`` (episode sampling, gathering the embeddings from the table, padding),
   is moved to the device the way Lightning moves it, and then every engine takes one full
   meta-step on it (meta-gradient, grad-norm clip at 1, Adam), in an order that rotates per
   batch so that noise hits all alike. Each engine has its own copy of the same initial model:
   - ``framework``: ``MetaRewardModel.training_step`` (all users adapted at once), backward;
   - ``per-user``: ``maml.adapt_per_user`` (a Python loop over users) on the same batches;
   - ``reference``: the reference code's shape (it uses ``higher``): per user, clone w0, fresh
     inner-optimizer steps on the support loss with ``create_graph``, query loss, backward
     accumulated user by user, then one outer step. Without ``higher``'s module patching, so
     this is a lower bound on the reference's cost.
   The three give the same meta-gradient (checked on the first batch before timing). The data
   path is timed per batch and charged to the engines that read it: "end-to-end" = data +
   step. The framework's batches carry each real pair's chosen-minus-rejected embedding, packed
   (a ``PairBatch``; linear base functions, as ``Trainer.fit`` gives them:
   ``MetaRewardModel.reads_pair_differences``); the loops', the chosen and the rejected
   embeddings padded, as the reference code reads them. Both loaders give the same episodes.
2. Seconds per epoch of the framework as ``mrm fit`` runs it (a ``Trainer``, no logger, no
   validation, from the epoch-start to the epoch-end hook), against a lower bound measured in
   the same run: copy every embedding row the epoch touches once, as stored (``index_select``
   into a preallocated buffer, the table already on the device), and one ``[K, D] @ [D, N]``
   product in float32 (a compact table's rows cast block by block into a reused buffer).
3. Evaluation: ``Trainer.validate`` and ``Trainer.test`` (no logger) adapting and scoring every
   user of the data module's validation and test loaders, from the start to the end hook (the
   module's epoch-end work included; validation tries each candidate adaptation strength).
4. Peak memory: CPU, ``ru_maxrss`` (the process peak, data generation included); CUDA,
   ``torch.cuda.max_memory_allocated``.

``--embedding-dtype float16`` (or ``bfloat16``) stores the table compactly, as
``data.embedding_dtype`` does: half the memory, the same episodes, float32 arithmetic. The JSON
gives the memory per million pairs (the table's, and the process peak's).

Notes: the framework gathers episodes on the CPU and then moves them (Lightning's
``transfer_batch_to_device``): that is what is measured, on CUDA too; only the lower bound keeps
the table on the device. The objective is plain MAML (mean query loss); RPO's callback adds one
quantile over B losses per step. Episodes: each user's pairs are its own units, so with
``--pairs 30``, ``val 0.1`` and ``test 0.3`` a seen user has about 18 training pairs; an
episode takes ``--support 3`` of them and up to ``--query 27`` of the rest (so about 15). The
run prints the real and padded sizes it saw. Torch's thread count is left at its default and
reported; on a busy machine with few cores, ``OMP_NUM_THREADS=1`` can make these small
operations many times faster (threads that wait for a descheduled peer), so say which you ran.

Run:
    python experiments/bench_speed.py                      # the paper's PRISM shape (~1 GB table)
    python experiments/bench_speed.py --users 200 --dim 512 --repeats 3   # seconds, any laptop
    python experiments/bench_speed.py --device cuda --json runs/bench_speed.json
    python experiments/bench_speed.py --users 10000 --pairs 50 --embedding-dtype float16 \
        --repeats 2 --warmup 0                              # ten times PRISM, ~16 GiB
    OMP_NUM_THREADS=1 python experiments/bench_speed.py --users 200 --dim 512 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import lightning
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import Callback, Trainer
from torch import Tensor
from torch.utils.data import DataLoader

from mrm_lightning.data.batch import PairBatch
from mrm_lightning.data.datamodule import EpisodicDataModule
from mrm_lightning.data.episodes import MetaTrainBatches
from mrm_lightning.data.preferences import (
    CompactEmbeddings,
    EmbeddingDtype,
    PreferenceData,
    PreferenceSource,
    table_bytes,
)
from mrm_lightning.data.sources.synthetic import SyntheticPopulation
from mrm_lightning.data.splits import TEST, VAL
from mrm_lightning.method.heads import combine
from mrm_lightning.method.losses import bradley_terry_loss
from mrm_lightning.method.maml import ADAM_BETAS, ADAM_EPS, adapt_per_user, pair_margins
from mrm_lightning.training.module import MetaRewardModel

Batch = dict[str, Tensor] | PairBatch  # padded (the loops) or packed (the framework)
T = TypeVar("T")
Engine = Callable[[MetaRewardModel, Batch], None]  # fills .grad of the model's parameters
GRAD_CLIP = 1.0  # the reference clips the meta-gradient norm at 1 (configs do the same)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1000, help="users in the population")
    p.add_argument("--pairs", type=int, default=30, help="pairs per user")
    p.add_argument("--dim", type=int, default=4096, help="embedding size D")
    p.add_argument("--k", type=int, default=2, help="base reward functions K")
    p.add_argument("--steps", type=int, default=1, help="inner steps")
    p.add_argument("--inner-optimizer", choices=["sgd", "adam"], default="adam")
    p.add_argument("--inner-lr", type=float, default=1e-3, help="inner learning rate")
    p.add_argument("--input-scale", type=float, default=1.0, help="model.input_scale")
    p.add_argument("--meta-batch", type=int, default=32, help="users per meta-batch B")
    p.add_argument("--support", type=int, default=3, help="support pairs per episode")
    p.add_argument("--query", type=int, default=27, help="most query pairs per episode")
    p.add_argument("--val-fraction", type=float, default=0.1, help="units held for validation")
    p.add_argument("--test-fraction", type=float, default=0.3, help="units held for test")
    p.add_argument("--eval-batch", type=int, default=128, help="users adapted together in eval")
    p.add_argument(
        "--embedding-dtype",
        choices=["float32", "float16", "bfloat16"],
        default="float32",
        help="data.embedding_dtype: how the table is stored (arithmetic stays float32)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of each measurement")
    p.add_argument("--warmup", type=int, default=1, help="untimed repeats first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write every number here")
    return p.parse_args(argv)


def quiet_known_warnings() -> None:
    """Silence Lightning's notes that do not apply to a benchmark (no workers, no Trainer)."""
    for message in (
        ".*reference is not registered on the model.*",  # training_step without a Trainer
        ".*does not have many workers.*",
        ".*IterableDataset.*has `__len__`.*",
        ".*LeafSpec.*",
        ".*GPU available but not used.*",  # --device cpu on a GPU machine, on purpose
    ):
        warnings.filterwarnings("ignore", message=message)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


class TimedSource(PreferenceSource):
    """Wraps a source and records how long its ``load`` took (the data module calls it)."""

    def __init__(self, source: PreferenceSource) -> None:
        self.source, self.embedding_dim = source, source.embedding_dim
        self.load_seconds = float("nan")

    def load(self) -> PreferenceData:
        return self.load_as("float32")

    def load_as(self, dtype: EmbeddingDtype) -> PreferenceData:
        start = time.perf_counter()
        data = self.source.load_as(dtype)
        self.load_seconds = time.perf_counter() - start
        return data


def build(args: argparse.Namespace) -> tuple[EpisodicDataModule, MetaRewardModel, TimedSource]:
    """The data module (set up) and an untrained model, both as the CLI would build them."""
    source = TimedSource(
        SyntheticPopulation(
            args.users, args.dim, min_pairs=args.pairs, max_pairs=args.pairs, seed=args.seed
        )
    )
    dm = EpisodicDataModule(
        source,
        users_per_batch=args.meta_batch,
        support_size=args.support,
        query_size=args.query,
        eval_users_per_batch=args.eval_batch,
        unseen_fraction=0.5,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        max_train_pairs_unseen=None,  # PRISM's protocol caps no user's training pairs
        min_pairs_per_user=2,
        embedding_dtype=args.embedding_dtype,
        seed=args.seed,
    )
    dm.setup("fit")
    torch.manual_seed(args.seed)
    model = MetaRewardModel(
        embedding_dim=args.dim,
        num_base_rewards=args.k,
        input_scale=args.input_scale,
        combination="softmax",
        inner_steps=args.steps,
        inner_lr=args.inner_lr,
        inner_optimizer=args.inner_optimizer,
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
    )
    return dm, model, source


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[..., T], *fn_args: object) -> tuple[float, T]:
    """Seconds ``fn(*fn_args)`` takes, with the device's queue drained before and after."""
    sync(device)
    start = time.perf_counter()
    value = fn(*fn_args)
    sync(device)
    return time.perf_counter() - start, value


# ------------------------------------------------------------------------------- engines
def framework_backward(model: MetaRewardModel, batch: Batch) -> None:
    """The framework's step: all users of the meta-batch adapted at once."""
    model.training_step(batch, 0).backward()


def per_user_backward(model: MetaRewardModel, batch: Batch) -> None:
    """Base rewards batched, then ``maml.adapt_per_user``: one user at a time in Python."""
    hp, phi = model.hparams, model.base_rewards
    weights = adapt_per_user(  # [B, K]
        model.w0,
        phi(batch["support_chosen"]),  # [B, S, K]
        phi(batch["support_rejected"]),
        batch["support_mask"],
        steps=hp.inner_steps,
        lr=hp.inner_lr,
        optimizer=hp.inner_optimizer,
        first_order=hp.first_order,
        combination=hp.combination,
    )
    query = phi(batch["query_chosen"]), phi(batch["query_rejected"])  # [B, Q, K] each
    margins = pair_margins(weights, *query, hp.combination)  # [B, Q]
    bradley_terry_loss(margins, batch["query_mask"]).mean().backward()


def reference_backward(model: MetaRewardModel, batch: Batch) -> None:
    """The reference code's loop: per user, clone w0, fresh optimizer steps, backward.

    Adam here is torch.optim.Adam's step (eps outside the root), as ``higher`` applies it.
    """
    hp, phi = model.hparams, model.base_rewards
    users = batch["support_mask"].shape[0]
    beta1, beta2 = ADAM_BETAS

    def margin(w: Tensor, prefix: str, real: Tensor, user: int) -> Tensor:
        chosen = phi(batch[f"{prefix}_chosen"][user, real])  # [P_u, K]
        rejected = phi(batch[f"{prefix}_rejected"][user, real])
        return combine(w[None], chosen[None], hp.combination) - combine(
            w[None], rejected[None], hp.combination
        )  # [1, P_u]

    for user in range(users):
        support, query = batch["support_mask"][user], batch["query_mask"][user]
        w = model.w0.clone()  # [K]
        first = second = torch.zeros_like(w)
        for step in range(1, hp.inner_steps + 1):
            loss = -F.logsigmoid(margin(w, "support", support, user)).mean()
            (grad,) = torch.autograd.grad(loss, w, create_graph=not hp.first_order)
            if hp.inner_optimizer == "adam":
                first = beta1 * first + (1 - beta1) * grad
                second = beta2 * second + (1 - beta2) * grad * grad
                m_hat, v_hat = first / (1 - beta1**step), second / (1 - beta2**step)
                w = w - hp.inner_lr * m_hat / (v_hat.sqrt() + ADAM_EPS)
            else:
                w = w - hp.inner_lr * grad
        query_loss = -F.logsigmoid(margin(w, "query", query, user)).mean()
        (query_loss / users).backward()  # accumulated: the mean over the meta-batch


ENGINES: dict[str, Engine] = {
    "framework": framework_backward,
    "per-user": per_user_backward,
    "reference": reference_backward,
}


def meta_step(
    engine: Engine, model: MetaRewardModel, optimizer: torch.optim.Optimizer, batch: Batch
) -> None:
    """One full meta-step: the engine's meta-gradient, then the outer update."""
    engine(model, batch)
    outer_step(model, optimizer)


def outer_step(model: MetaRewardModel, optimizer: torch.optim.Optimizer) -> None:
    """Clip the meta-gradient's norm (as the configs do), Adam step, clear the gradients."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def check_same_gradients(models: dict[str, MetaRewardModel], batches: dict[str, Batch]) -> float:
    """Every engine's meta-gradient on its batch (the same episodes); raise unless they agree.
    Max relative gap."""
    grads = {}
    for name, model in models.items():
        ENGINES[name](model, batches[name])
        grads[name] = [p.grad.detach().clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
    worst = 0.0
    for got in grads.values():
        for g, want in zip(got, grads["framework"], strict=True):
            gap = float((g - want).norm() / want.norm().clamp_min(1e-30))
            worst = max(worst, gap)
    # An inner Adam step from fresh state is about lr * sign(gradient): where a gradient entry
    # is near 0, summation order alone can flip its sign, so engines that add in different
    # orders (batched vs one user at a time) agree to ~1e-3 at large scale, not to 1e-6.
    if worst > 1e-2:
        raise AssertionError(f"the engines' meta-gradients differ (relative gap {worst:.2e})")
    return worst


# ---------------------------------------------------------------------- meta-training
def episode_rows(dm: EpisodicDataModule, loader: DataLoader, users: list[int]) -> Tensor:
    """``[N]`` distinct embedding rows that these users' epoch-0 episodes read."""
    data, tasks = dm.data, loader.dataset
    support, support_mask, query, query_mask = tasks.episodes(torch.tensor(users), 0)
    pairs = torch.cat([support[support_mask], query[query_mask]])
    return torch.unique(torch.cat([data.chosen[pairs], data.rejected[pairs]]))


def next_on_device(batches: Iterator[Batch], device: torch.device) -> Batch:
    """The loader's next batch, moved as Lightning's ``transfer_batch_to_device`` moves it."""
    return move_data_to_device(next(batches), device)


def sample_episodes(tasks: MetaTrainBatches, users: list[int], per_batch: int) -> None:
    """Only the episode sampling of the data path (support / query split, no gathering), as
    an epoch's iterator does it: every meta-batch's split at once, then padded batch by batch."""
    for _ in tasks.episodes_by_batch(torch.tensor(users), 0, per_batch):
        pass


def bench_meta_training(
    dm: EpisodicDataModule, models: dict[str, MetaRewardModel], args: argparse.Namespace
) -> dict:
    """Seconds per epoch of meta-batches: data paths, episode sampling, each engine's step."""
    device = torch.device(args.device)
    # built once each, as Lightning does (it re-iterates them): the framework's as Trainer.fit
    # builds it for this model, the loops' with chosen and rejected embeddings
    differences = models["framework"].reads_pair_differences
    loaders = {"data": dm.meta_train_loader(differences), "data_pairs": dm.meta_train_loader()}
    tasks = loaders["data"].dataset
    reads = {name: "data" if name == "framework" else "data_pairs" for name in models}
    optimizers = {n: torch.optim.Adam(m.parameters(), lr=1e-3) for n, m in models.items()}
    names = list(models)
    runs: dict[str, list[float]] = {
        "data": [],
        "data_pairs": [],
        "sampling": [],
        **{n: [] for n in names},
    }
    users: list[int] = []
    shape = dict.fromkeys(("support_real", "support_padded", "query_real", "query_padded"), 0)
    gradient_gap = float("nan")
    for repeat in range(args.warmup + args.repeats):
        total = dict.fromkeys(runs, 0.0)
        streams = {path: iter(loader) for path, loader in loaders.items()}
        for i in range(len(tasks)):
            got = {}
            for path in list(streams)[i % 2 :] + list(streams)[: i % 2]:  # rotating order
                seconds, got[path] = timed(device, next_on_device, streams[path], device)
                total[path] += seconds
            batch = got["data_pairs"]  # padded: its masks show the padding too
            if repeat == 0:
                users += batch["user"].tolist()
                for part in ("support", "query"):
                    shape[f"{part}_real"] += int(batch[f"{part}_mask"].sum())
                    shape[f"{part}_padded"] += batch[f"{part}_mask"].numel()
                if i == 0:
                    gradient_gap = check_same_gradients(models, {n: got[reads[n]] for n in names})
            for name in names[i % len(names) :] + names[: i % len(names)]:  # rotating order
                args_ = (ENGINES[name], models[name], optimizers[name], got[reads[name]])
                total[name] += timed(device, meta_step, *args_)[0]
        total["sampling"] = timed(device, sample_episodes, tasks, users, args.meta_batch)[0]
        models["framework"].train_accuracy.reset()  # a Trainer resets it every epoch
        if repeat >= args.warmup:
            for key, seconds in total.items():
                runs[key].append(seconds)
    per_user = {k: v / len(users) for k, v in shape.items()}
    return {
        "runs": runs,
        "users": users,
        "episode_shape": per_user,
        "gradient_gap": gradient_gap,
        "reads": reads,
        "differences": differences,
    }


class HookTimer(Callback):
    """Seconds from a start hook to its end hook (device drained), per Trainer phase.

    Training: ``on_train_epoch_start`` to ``on_train_epoch_end``; validation and test:
    ``on_validation_start`` to ``on_validation_end`` (the module's epoch-end work included).
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, {"train": [], "val": [], "test": []}
        self._start = 0.0

    def _begin(self) -> None:
        sync(self.device)
        self._start = time.perf_counter()

    def _end(self, phase: str) -> None:
        sync(self.device)
        self.seconds[phase].append(time.perf_counter() - self._start)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: MetaRewardModel) -> None:
        self._begin()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: MetaRewardModel) -> None:
        self._end("train")

    def on_validation_start(self, trainer: Trainer, pl_module: MetaRewardModel) -> None:
        self._begin()

    def on_validation_end(self, trainer: Trainer, pl_module: MetaRewardModel) -> None:
        self._end("val")

    def on_test_start(self, trainer: Trainer, pl_module: MetaRewardModel) -> None:
        self._begin()

    def on_test_end(self, trainer: Trainer, pl_module: MetaRewardModel) -> None:
        self._end("test")


def make_trainer(
    args: argparse.Namespace, timer: HookTimer, root: str, val_batches: float = 1.0
) -> Trainer:
    """A Trainer as the configs set one up, minus logger and checkpoints; ``val_batches`` 0
    turns validation off (in ``fit`` and ``validate`` alike)."""
    device = torch.device(args.device)
    return Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        max_epochs=args.warmup + args.repeats,
        limit_val_batches=val_batches,
        num_sanity_val_steps=0,
        inference_mode=False,  # evaluation adapts users with autograd
        gradient_clip_val=GRAD_CLIP,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=root,
    )


def bench_trainer_epochs(
    model: MetaRewardModel, dm: EpisodicDataModule, args: argparse.Namespace
) -> list[float]:
    """Seconds per epoch of ``Trainer.fit`` (``mrm fit``'s path; its one-off fits before the
    first epoch, standardisation and warm start, are not counted)."""
    timer = HookTimer(torch.device(args.device))
    with tempfile.TemporaryDirectory() as root:
        make_trainer(args, timer, root, val_batches=0).fit(model, datamodule=dm)
    return timer.seconds["train"][args.warmup :]


def bench_evaluation(
    model: MetaRewardModel, dm: EpisodicDataModule, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Seconds for ``Trainer.validate`` / ``Trainer.test`` to adapt and score every evaluated
    user of the data module's val and test loaders (validation tries every candidate
    adaptation strength, as the module does)."""
    timer = HookTimer(torch.device(args.device))
    with tempfile.TemporaryDirectory() as root:
        trainer = make_trainer(args, timer, root)
        for _ in range(args.warmup + args.repeats):
            trainer.validate(model, datamodule=dm, verbose=False)
            trainer.test(model, datamodule=dm, verbose=False)
    return {phase: timer.seconds[phase][args.warmup :] for phase in ("val", "test")}


def lower_bound(
    dm: EpisodicDataModule, model: MetaRewardModel, rows: Tensor, args: argparse.Namespace
) -> list[float]:
    """Seconds to read the epoch's N rows once, as stored, and apply the base functions to
    them in float32 (a compact table's rows are cast on the way, as training casts them)."""
    device = torch.device(args.device)
    stored = dm.data.embeddings
    compact = isinstance(stored, CompactEmbeddings)
    table = (stored.table if compact else stored).to(device)  # [T, D], moved once
    index = rows.to(device)  # [N]
    buffer = torch.empty(len(rows), table.shape[1], dtype=table.dtype, device=device)  # [N, D]
    weight = model.base_rewards.net.weight.detach().to(device)  # [K, D]

    block = torch.empty(min(len(rows), 8192), table.shape[1], device=device)  # [n, D] float32

    def once() -> Tensor | list[Tensor]:
        torch.index_select(table, 0, index, out=buffer)  # the copy: N * D * itemsize bytes
        # [K, D] @ [D, N]: the faster order of this product on CPU (as the head computes it)
        if not compact:
            return weight @ buffer.T  # [K, N]
        # a compact table's rows in float32, a block at a time, into memory allocated once
        return [weight @ block[: len(r)].copy_(r).T for r in buffer.split(len(block))]

    runs = [timed(device, once)[0] for _ in range(args.warmup + args.repeats + 2)]
    return runs[args.warmup + 2 :]


# ------------------------------------------------------------------------------ report
def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo where there is one."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else platform.processor() or platform.machine()


def stored_dtype(dm: EpisodicDataModule) -> torch.dtype:
    """The dtype the data module keeps its embedding table in."""
    stored = dm.data.embeddings
    return stored.table.dtype if isinstance(stored, CompactEmbeddings) else stored.dtype


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def summarize(args, dm, source, setup, train, epochs, bound, evaluation, rows) -> dict:
    """Every median, ratio and setting in one JSON-ready dict."""
    device = torch.device(args.device)
    med = {k: statistics.median(v) for k, v in train["runs"].items()}
    users = len(train["users"])
    end_to_end = {n: med[train["reads"][n]] + med[n] for n in ENGINES}
    epoch_s, bound_s = statistics.median(epochs), statistics.median(bound)
    eval_s = {k: statistics.median(v) for k, v in evaluation.items()}
    rss = peak_rss_bytes()
    cuda_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "torch_version": torch.__version__,
        "lightning_version": lightning.__version__,
        "device_name": device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "load_seconds": source.load_seconds,
        "setup_seconds": setup["seconds"],
        "embedding_dtype": args.embedding_dtype,
        "pairs": dm.data.num_pairs,
        "table_bytes": table_bytes(dm.data.embeddings),
        "table_bytes_per_million_pairs": table_bytes(dm.data.embeddings) / dm.data.num_pairs * 1e6,
        "peak_memory_bytes_per_million_pairs": (cuda_peak or rss) / dm.data.num_pairs * 1e6,
        "meta_train_users_per_epoch": users,
        "meta_batches_per_epoch": users // args.meta_batch,
        "episode_pairs_per_user": train["episode_shape"],
        "gradient_relative_gap": train["gradient_gap"],
        "median_seconds_per_epoch_of_steps": med,
        "end_to_end_seconds_per_epoch": end_to_end,
        "users_per_second": {n: users / s for n, s in end_to_end.items()},
        "compute_users_per_second": {n: users / med[n] for n in ENGINES},
        "batched_over_per_user": end_to_end["per-user"] / end_to_end["framework"],
        "batched_over_reference": end_to_end["reference"] / end_to_end["framework"],
        "batched_over_per_user_compute": med["per-user"] / med["framework"],
        "batched_over_reference_compute": med["reference"] / med["framework"],
        "data_share_of_framework_step": med["data"] / end_to_end["framework"],
        "framework_reads_pair_differences": train["differences"],
        "trainer_epoch_seconds": epoch_s,
        "trainer_users_per_second": users / epoch_s,
        "lower_bound_rows": len(rows),
        "lower_bound_bytes": len(rows) * args.dim * torch.finfo(stored_dtype(dm)).bits // 8,
        "lower_bound_seconds": bound_s,
        "epoch_over_lower_bound": epoch_s / bound_s,
        "eval_seconds": eval_s,
        "eval_users": {"val": len(dm.eval_users(VAL)), "test": len(dm.eval_users(TEST))},
        "peak_rss_bytes": rss,
        "peak_rss_after_setup_bytes": setup["rss"],
        "peak_cuda_bytes": cuda_peak,
        "peak_memory_bytes": cuda_peak if cuda_peak is not None else rss,
        "raw_seconds": {
            "steps_per_epoch": train["runs"],
            "trainer_epochs": epochs,
            "lower_bound": bound,
            "eval": evaluation,
        },
    }


def print_table(r: dict) -> None:
    """The human-readable report of :func:`summarize`'s numbers."""
    s, med = r["settings"], r["median_seconds_per_epoch_of_steps"]
    e2e, users, shape = (
        r["end_to_end_seconds_per_epoch"],
        r["meta_train_users_per_epoch"],
        r["episode_pairs_per_user"],
    )
    print(
        f"\n{s['users']} users x {s['pairs']} pairs x {s['dim']}-d, K={s['k']}, "
        f"{s['steps']} inner {s['inner_optimizer']} step(s), on {r['device_name']} "
        f"({r['cpu_threads']} CPU threads, torch {r['torch_version']})\n"
        f"table {r['table_bytes'] / 2**30:.2f} GiB in {r['embedding_dtype']} ("
        f"{r['table_bytes_per_million_pairs'] / 2**30:.1f} GiB per million pairs): "
        f"SyntheticPopulation.load "
        f"{r['load_seconds']:.1f} s, rest of setup {r['setup_seconds']:.1f} s\n"
        f"episode pairs per user: support {shape['support_real']:.1f} (padded to "
        f"{shape['support_padded']:.1f}), query {shape['query_real']:.1f} (padded to "
        f"{shape['query_padded']:.1f}); engines' meta-gradients agree (relative gap "
        f"{r['gradient_relative_gap']:.0e})"
    )
    print(
        f"\nmeta-training: {users} users per epoch, {r['meta_batches_per_epoch']} meta-batches "
        f"of {s['meta_batch']}; medians of {s['repeats']} epochs"
    )
    print(f"{'':<42}{'s/epoch':>9}{'users/s':>10}{'x framework':>13}")

    def row(label: str, seconds: float, ratio: float | None = None) -> None:
        tail = f"{ratio:>12.2f}x" if ratio is not None else ""
        print(f"{label:<42}{seconds:>9.3f}{users / seconds:>10.0f}{tail}")

    framework_reads = "differences" if r["framework_reads_pair_differences"] else "pairs"
    row(f"data path, framework ({framework_reads})", med["data"])
    row("data path, loops (chosen and rejected)", med["data_pairs"])
    row("  of which episode sampling", med["sampling"])
    for name in ENGINES:
        row(f"{name} step only", med[name], med[name] / med["framework"])
    for name in ENGINES:
        row(f"{name} end-to-end (data + step)", e2e[name], e2e[name] / e2e["framework"])
    print(
        f"\nepoch of Trainer.fit        {r['trainer_epoch_seconds']:9.3f} s\n"
        f"lower bound                 {r['lower_bound_seconds']:9.5f} s   (copy "
        f"{r['lower_bound_rows']} rows = {r['lower_bound_bytes'] / 2**20:.1f} MiB, then "
        f"[K, D] @ [D, N])\nepoch / lower bound         {r['epoch_over_lower_bound']:9.1f} x"
    )
    ev, eu = r["eval_seconds"], r["eval_users"]
    print(
        f"evaluation (adapt + score)  {ev['val']:9.3f} s val ({eu['val']} users), "
        f"{ev['test']:.3f} s test ({eu['test']} users)"
    )
    cuda = r["peak_cuda_bytes"]
    print(
        f"peak memory                 {r['peak_rss_bytes'] / 2**30:9.2f} GiB process RSS "
        f"(ru_maxrss: whole process, data generation included; "
        f"{r['peak_rss_after_setup_bytes'] / 2**30:.2f} GiB by the end of setup)"
        + (f"; CUDA {cuda / 2**30:.2f} GiB allocated" if cuda is not None else "")
        + f"\n                            "
        f"{r['peak_memory_bytes_per_million_pairs'] / 2**30:9.2f} GiB per million pairs "
        f"({r['pairs']} pairs)"
    )


def progress(start: float, message: str) -> None:
    """A phase's start on stderr, so that a long run shows where it is (and where its memory
    peaked: the peak so far is printed with each phase)."""
    print(
        f"[{time.perf_counter() - start:6.1f} s] {message} "
        f"(peak RSS so far {peak_rss_bytes() / 2**30:.2f} GiB)",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    quiet_known_warnings()
    device = torch.device(args.device)
    start = time.perf_counter()
    progress(start, "generating the population and setting up the data module")
    dm, model, source = build(args)
    setup = {"seconds": time.perf_counter() - start - source.load_seconds, "rss": peak_rss_bytes()}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    models = {name: copy.deepcopy(model).to(device) for name in ENGINES}
    progress(start, "meta-training steps: framework, per-user, reference (interleaved)")
    train = bench_meta_training(dm, models, args)
    progress(start, "lower bound")
    rows = episode_rows(dm, dm.train_dataloader(), train["users"])
    bound = lower_bound(dm, model, rows, args)
    progress(start, "Trainer.validate and Trainer.test")
    evaluation = bench_evaluation(copy.deepcopy(model), dm, args)
    progress(start, "Trainer.fit epochs")
    epochs = bench_trainer_epochs(copy.deepcopy(model), dm, args)
    progress(start, "done")
    result = summarize(args, dm, source, setup, train, epochs, bound, evaluation, rows)
    print_table(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
