"""A checkpoint file read and checked before anything uses it: each way a file can fail to be
an MRM checkpoint is one :class:`CheckpointError` naming the file and saying what is wrong.

Read by ``mrm adapt / score / serve`` (:func:`mrm_lightning.use.inference.load_checkpoint`) and,
for ``mrm fit / validate / test --ckpt_path FILE``, before Lightning loads the file
(:class:`mrm_lightning.training.lightning_cli.MRMCLI`), so that an empty, cut-short or foreign
file is one line, not a traceback from deep inside torch.

Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only. A file
holding any other Python object is refused, never unpickled (unpickling can run code).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from .module import MetaRewardModel

ZIP_START = b"PK\x03\x04"  # what torch.save writes: a zip archive
PICKLE_START = b"\x80"  # a pickle (protocol 2 or later): torch's old format, or plain pickle
# values of --ckpt_path that Lightning resolves itself; they are no file to check here
LIGHTNING_NAMES = ("best", "last", "hpc", "registry")
MRM_WEIGHTS = ("w0", "base_rewards.")  # names only an MRM state_dict has


class CheckpointError(ValueError):
    """A file that is not a usable MRM checkpoint; the message names the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


def read_checkpoint(path: str | Path, resume: bool = False) -> tuple[dict, str]:
    """The checkpoint's contents and the sha256 of its bytes (read once, so the two agree).

    Args:
        resume: also require what ``mrm fit --ckpt_path`` resumes from (the optimizer state).

    Raises:
        CheckpointError: the file is empty, cut short, not a checkpoint, holds other objects
            than tensors and plain values, or is a checkpoint of another model.
        OSError: the file cannot be read (the error names it).
    """
    data = Path(path).read_bytes()
    checkpoint = _load(path, data)
    check_mrm_checkpoint(path, checkpoint, resume)
    return checkpoint, hashlib.sha256(data).hexdigest()


def _load(path: str | Path, data: bytes) -> object:
    """``torch.load`` of the bytes, each failure told in words (the file's form first: torch's
    own messages for an empty or cut-short file are ``EOFError`` or ``negative seek value``)."""
    if not data:
        raise CheckpointError(path, "empty file (0 bytes), not a checkpoint")
    if data.startswith(ZIP_START):
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise CheckpointError(
                path,
                f"cut short: the checkpoint's zip archive ends early ({len(data)} bytes, no "
                "end-of-archive record); was it copied or written only in part?",
            )
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        if not any(name.endswith("/data.pkl") for name in names):
            raise CheckpointError(path, "a zip archive, but not a torch checkpoint (no data.pkl)")
    elif not data.startswith(PICKLE_START):
        raise CheckpointError(
            path,
            "not a checkpoint: neither the zip archive torch.save writes nor a pickle (it "
            f"starts with bytes {data[:4].hex(' ')})",
        )
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols says nothing here
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # whatever torch.load raises, it is about these bytes
        raise CheckpointError(path, _load_problem(error, data)) from None


def _load_problem(error: Exception, data: bytes) -> str:
    """What a failure of ``torch.load`` says about the file, in words."""
    found = re.search(r"GLOBAL (\S+)", str(error))
    if isinstance(error, pickle.UnpicklingError) and found:
        return (
            "refused: the file holds Python objects other than tensors and plain values "
            f"(first found: {found.group(1)}), which are never unpickled (that could run code)"
        )
    if isinstance(error, EOFError) or "seek" in str(error):
        return "cut short: the file ends early; was it copied or written only in part?"
    if not data.startswith(ZIP_START):
        return "a Python pickle, not a torch checkpoint (torch.save writes a zip archive)"
    return f"damaged: torch cannot read it ({_first(error)})"


def _first(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type where it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_mrm_checkpoint(path: str | Path, checkpoint: object, resume: bool = False) -> None:
    """Refuse what is not a checkpoint of MRM (:class:`MetaRewardModel`) saved by Lightning."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            path,
            f"not a checkpoint: it holds a {type(checkpoint).__name__}, not the dictionary "
            "Lightning saves",
        )
    weights = checkpoint.get("state_dict")
    if not isinstance(weights, dict):
        raise CheckpointError(path, "not an MRM checkpoint: it has no state_dict (weights)")
    if not weights:
        raise CheckpointError(path, "not an MRM checkpoint: its state_dict holds no weights")
    if "w0" not in weights or not any(k.startswith(MRM_WEIGHTS[1]) for k in weights):
        raise CheckpointError(
            path,
            "not an MRM checkpoint: a checkpoint of another model (its weights have no w0 and "
            f"base_rewards; they start with {', '.join(list(weights)[:3])})",
        )
    if not isinstance(checkpoint.get("hyper_parameters"), dict):
        raise CheckpointError(
            path, "an MRM checkpoint without hyper_parameters: the model cannot be rebuilt"
        )
    if "pytorch-lightning_version" not in checkpoint:
        raise CheckpointError(path, "not saved by Lightning (no pytorch-lightning_version)")
    if resume and "optimizer_states" not in checkpoint:
        raise CheckpointError(
            path,
            "holds the weights only (ModelCheckpoint save_weights_only): fit cannot resume "
            "from it; validate and test can use it",
        )


def model_settings(path: str | Path, checkpoint: dict) -> dict:
    """The checkpoint's ``hyper_parameters`` as :class:`MetaRewardModel` arguments; a setting
    this version does not have is refused (a checkpoint of another version)."""
    settings = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    unknown = sorted(set(settings) - set(inspect.signature(MetaRewardModel).parameters))
    if unknown:
        raise CheckpointError(path, f"unknown model settings {unknown} (another version?)")
    if "adaptation_lr_scales" in settings:
        settings["adaptation_lr_scales"] = tuple(settings["adaptation_lr_scales"])
    return settings


def check_ckpt_path(value: object, subcommand: str) -> None:
    """Check ``--ckpt_path`` of ``mrm fit / validate / test / predict`` where it names a local
    file; Lightning's own names (``best``, ``last``, ``hpc``, ``registry:...``) and URLs
    (``s3://...``) are left to it."""
    if value is None or not str(value).strip():
        return
    text = str(value)
    if text.lower().split(":")[0] in LIGHTNING_NAMES or "://" in text:
        return
    checkpoint, _ = read_checkpoint(text, resume=subcommand == "fit")
    model_settings(text, checkpoint)
