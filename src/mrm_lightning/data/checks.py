"""The data module's settings and split, checked: each error names the ``data.*`` setting to
change, and says the first cause (users removed by a rule) rather than a later symptom."""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from .sampling import Size, resolve_size
from .splits import SplitSummary

# fewer validation users than this choose adaptation by a noisy vote: the run warns
FEW_VALIDATION_USERS = 5
# what to change when a drop rule removed users (SplitSummary.dropped_reasons' wording)
DROP_ADVICE = (
    ("min_pairs_per_user", "lower data.min_pairs_per_user"),
    ("min_units_per_user", "lower data.min_units_per_user"),
    ("no pair in the test units", "raise data.test_fraction (or give users more distinct units)"),
    ("no pair in the training units", "lower data.test_fraction and data.val_fraction"),
)


def removal_cause(split: SplitSummary, num_users: int) -> str:
    """Why users were removed, with what to change for the rule that removed the most."""
    reason, _ = split.dropped_reasons.most_common(1)[0]
    advice = next((a for key, a in DROP_ADVICE if key in reason), "check the data")
    return (
        f"{len(split.dropped_users)} of the {num_users} users were removed "
        f"({split.describe()}): {advice}"
    )


def check_size(setting: str, size: Size, least: int) -> None:
    """A count of at least ``least`` pairs, or a fraction strictly between 0 and 1."""
    if isinstance(size, float) and not size.is_integer():
        if not 0.0 < size < 1.0:
            raise ValueError(f"{setting} as a fraction must be in (0, 1), got {size}")
    elif size < least:
        raise ValueError(f"{setting} must be a count of at least {least}, got {size}")


def check_data_settings(
    support_size: Size,
    support_size_min: int | None,
    query_size: Size | None,
    users_per_batch: int,
    eval_users_per_batch: int,
    val_fraction: float,
    test_fraction: float,
    users_without_train_pairs: str,
    embedding_dtype: str,
) -> None:
    """The constructor's settings (``EpisodicDataModule``), before anything is read."""
    check_size("data.support_size", support_size, least=0)
    if query_size is not None:
        check_size("data.query_size", query_size, least=1)
    if support_size_min is not None and not (
        isinstance(support_size, int) and 0 <= support_size_min <= support_size
    ):
        raise ValueError(
            f"data.support_size_min={support_size_min} needs a count data.support_size at "
            f"least as large, got {support_size}"
        )
    if users_per_batch < 1 or eval_users_per_batch < 1:
        raise ValueError("users_per_batch and eval_users_per_batch must be >= 1")
    if not 0.0 <= val_fraction < 1.0 or not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"need 0 <= val_fraction < 1 and 0 < test_fraction < 1, got "
            f"val_fraction={val_fraction}, test_fraction={test_fraction}"
        )
    if val_fraction + test_fraction >= 1.0:
        raise ValueError("val_fraction + test_fraction must leave room for training pairs")
    if users_without_train_pairs not in ("exclude", "prior"):
        raise ValueError(
            "data.users_without_train_pairs must be 'exclude' or 'prior', got "
            f"{users_without_train_pairs!r}"
        )
    if embedding_dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(
            "data.embedding_dtype must be 'float32', 'float16' or 'bfloat16', got "
            f"{embedding_dtype!r}"
        )


def check_episode_sizes(
    split: SplitSummary,
    num_users: int,
    meta_train_users: Tensor,
    train: dict[int, Tensor],
    support_size: Size,
) -> None:
    """Fail before meta-training, naming the setting, when no episode can be drawn; tell
    when some users' episodes will have a smaller support than asked (``train``: each user's
    training pair rows)."""
    if not len(meta_train_users):
        if not len(split.seen_users):
            kept = len(split.unseen_users) + len(split.validation_users)
            cause = (
                f"every one of the {kept} users kept is an unseen or validation user: lower "
                "data.unseen_fraction or data.validation_users"
            )
            if len(split.dropped_users):
                cause += f" (and {removal_cause(split, num_users)})"
        else:
            cause = (
                f"none of the {len(split.seen_users)} seen users has training pairs from 2 "
                "or more units (prompts, posts, conversations): lower data.test_fraction or "
                "data.val_fraction, or raise data.min_units_per_user"
            )
        raise ValueError(f"no meta-training episode can be drawn: {cause}")
    short = sum(
        resolve_size(support_size, len(train[u])) >= len(train[u])
        for u in meta_train_users.tolist()
    )
    if short == len(meta_train_users):  # not a few users: the setting is off
        fewest = min(len(train[u]) for u in meta_train_users.tolist())
        raise ValueError(
            f"data.support_size={support_size} asks for at least as many pairs as every "
            f"seen user has for training (the fewest is {fewest}): lower support_size or "
            "raise min_pairs_per_user"
        )
    if short:
        rank_zero_info(
            f"data.support_size={support_size}: {short} of "
            f"{len(meta_train_users)} meta-training users have no more training pairs "
            "than that; their episodes keep at least one unit for the query and a smaller "
            "support"
        )
