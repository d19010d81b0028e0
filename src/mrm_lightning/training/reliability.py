"""A reliability diagram of preference probabilities (Pillow, as :mod:`.figures`): per bin of
predicted probability, the observed share of pairs whose first response was preferred, for
each way of predicting (point, posterior), against the diagonal of perfect calibration."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import ImageDraw
from torch import Tensor

from ..method.calibration import expected_calibration_error, reliability_bins
from .figures import BLUE, GREY, ORANGE, Box, font, save_panels

Curves = Mapping[str, tuple[Tensor, Tensor]]  # name -> (probabilities [N], labels [N])
LIGHT = (235, 235, 235)


def reliability_panel(
    curves: Curves, title: str, bins: int = 10
) -> Callable[[ImageDraw.ImageDraw, Box], None]:
    """One panel: a line per curve through its bins' (mean predicted, observed) points, its
    ECE in the legend; bars along the bottom give each bin's share of pairs (x 0.3)."""

    def draw_panel(draw: ImageDraw.ImageDraw, box: Box) -> None:
        left, top, right, bottom = box
        x = lambda v: left + (right - left) * float(v)  # noqa: E731
        y = lambda v: bottom - (bottom - top) * float(v)  # noqa: E731
        draw.text(((left + right) / 2, top - 50), title, fill="black", font=font(18), anchor="ma")
        draw.text(((left + right) / 2, bottom + 40), "predicted probability (bin mean)",
                  fill="black", font=font(15), anchor="ma")  # fmt: skip
        draw.text((left - 70, top - 22), "observed share preferred", fill="black", font=font(15))
        draw.rectangle([left, top, right, bottom], outline="black", width=1)
        for tick in [i / 5 for i in range(6)]:
            draw.line([x(tick), top, x(tick), bottom], fill=LIGHT)
            draw.line([left, y(tick), right, y(tick)], fill=LIGHT)
            draw.text((x(tick), bottom + 8), f"{tick:.1f}", fill="black", font=font(13),
                      anchor="ma")  # fmt: skip
            draw.text((left - 8, y(tick)), f"{tick:.1f}", fill="black", font=font(13),
                      anchor="rm")  # fmt: skip
        draw.line([x(0), y(0), x(1), y(1)], fill=GREY, width=2)
        colours = (BLUE, ORANGE)
        for row, (name, (probs, labels)) in enumerate(curves.items()):
            colour = colours[row % len(colours)]
            mean_p, observed, counts = reliability_bins(probs, labels, bins)
            share = counts / counts.sum().clamp_min(1)
            width = 1 / (bins * len(curves))
            for index in range(bins):
                x0, x1 = x(index / bins + row * width) + 1, x(index / bins + (row + 1) * width) - 1
                tint = tuple(int(c + (255 - c) * 0.6) for c in colour)
                draw.rectangle([x0, y(0.3 * float(share[index])), x1, bottom], fill=tint)
            points = [(x(p), y(o)) for p, o, c in zip(mean_p, observed, counts) if c > 0]
            if len(points) > 1:
                draw.line(points, fill=colour, width=3)
            for px, py in points:
                draw.ellipse([px - 5, py - 5, px + 5, py + 5], fill=colour)
            ece = expected_calibration_error(probs, labels, bins)
            draw.text((left + 10, top + 10 + 22 * row), f"{name}: ECE {ece:.3f}", fill=colour,
                      font=font(16))  # fmt: skip

    return draw_panel


def write_reliability_diagram(path: Path, curves: Curves, title: str, bins: int = 10) -> None:
    save_panels(path, [reliability_panel(curves, title, bins)])


def both_orders(probs: Tensor) -> tuple[Tensor, Tensor]:
    """Each pair's probability that its chosen response wins as two predictions, (p, 1) and
    (1 - p, 0): labels that are not all 1, and a measure that ignores which response is first."""
    return torch.cat([probs, 1 - probs]), torch.cat(
        [torch.ones_like(probs), torch.zeros_like(probs)]
    )


def report_calibration(
    probabilities: Mapping[str, Tensor], run_dir: Path, logger, note: str = ""
) -> tuple[dict, str]:
    """The end-of-run report's calibration part, from the test's unseen users' win
    probabilities (``point``, and ``posterior`` where users were adapted): their ECE and Brier
    score, ``reliability.png`` (also logged to TensorBoard as ``test/reliability``), and a
    line for the table."""
    curves = {name: both_orders(probs) for name, probs in probabilities.items()}
    path = run_dir / "reliability.png"
    write_reliability_diagram(path, curves, "unseen users' held-out pairs")
    results: dict = {"plot": str(path)}
    for name, (probs, labels) in curves.items():
        results[f"ece_{name}"] = expected_calibration_error(probs, labels)
        results[f"brier_{name}"] = float(((probs.double() - labels) ** 2).mean())
    if isinstance(logger, TensorBoardLogger):
        import numpy as np
        from PIL import Image

        image = np.asarray(Image.open(path).convert("RGB"))
        logger.experiment.add_image("test/reliability", image, dataformats="HWC")
    shown = ", ".join(f"{name} {results[f'ece_{name}']:.3f}" for name in curves)
    return results, (
        f"Calibration on unseen users (ECE, lower is better): {shown}{note}; diagram: {path}"
    )
