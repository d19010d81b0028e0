"""Reusable memory for gathered meta-batches.

Fresh memory is expensive: the OS zeroes every page on first touch, and in a virtual machine
the host may take freed pages back and hand them out again on the next touch. At D = 4096 a
meta-batch is tens of MB, and allocating it anew each step can cost more than gathering it.
:class:`ReusableBuffers` hands out the memory of an earlier batch once nothing refers to it
any more: no tensor, view or autograd record, so reuse can never change what a caller sees.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# how many references a storage has; None where this build of torch does not expose it (then
# every batch gets fresh memory, as without this class)
_storage_users = getattr(torch._C, "_storage_Use_Count", None)


def storage_users(tensor: Tensor) -> int:
    """References to ``tensor``'s memory: tensors and views of it, autograd records..."""
    return _storage_users(tensor.untyped_storage()._cdata)


class ReusableBuffers:
    """Flat CPU buffers, each lent out again once its memory has no other user.

    Args:
        most: buffers kept at most (the oldest are forgotten first; memory still in use by a
            batch is freed when the batch is).
        slack: a new buffer is this much larger than asked, so that the next, slightly larger
            batch fits in it too.
    """

    def __init__(self, most: int = 24, slack: float = 0.25) -> None:
        self.most, self.slack = most, slack
        self.buffers: list[Tensor] = []
        # the count of a buffer nobody else holds (its own tensor and the count's probe)
        self.idle = storage_users(torch.empty(1)) if _storage_users is not None else None

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """An uninitialised tensor of ``shape``, in the memory of a free buffer if one fits."""
        numel = math.prod(shape)
        if self.idle is None:
            return torch.empty(shape, dtype=dtype)
        free = [
            b
            for b in self.buffers
            if b.dtype == dtype and b.numel() >= numel and storage_users(b) == self.idle
        ]
        if free:
            return min(free, key=Tensor.numel)[:numel].view(shape)
        buffer = torch.empty(numel + int(numel * self.slack), dtype=dtype)
        self.buffers = [buffer, *self.buffers[: self.most - 1]]
        return buffer[:numel].view(shape)
