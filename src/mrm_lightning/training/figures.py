"""Small PNG figures drawn with Pillow (which tensorboard already brings; matplotlib is not a
dependency): histograms and horizontal bars, a panel each, side by side in one image."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

Box = tuple[float, float, float, float]  # left, top, right, bottom of a panel's plot area
BLUE, ORANGE, GREY, RED = (31, 119, 180), (255, 127, 14), (200, 200, 200), (214, 39, 40)
PANEL_W, PANEL_H, MARGIN = 560, 440, (80, 70, 30, 80)  # margins: left, top, right, bottom


def font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def save_panels(path: Path, panels: Sequence[Callable[[ImageDraw.ImageDraw, Box], None]]) -> None:
    """Draw each panel in its own plot area, left to right, and save the PNG."""
    left, top, right, bottom = MARGIN
    image = Image.new("RGB", (PANEL_W * len(panels), PANEL_H), "white")
    draw = ImageDraw.Draw(image)
    for index, panel in enumerate(panels):
        x0 = index * PANEL_W
        panel(draw, (x0 + left, top, x0 + PANEL_W - right, PANEL_H - bottom))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    span = max(high - low, 1e-12)
    raw = span / max(count - 1, 1)
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    decimals += 1 if step * 10**decimals % 1 else 0  # 2.5 steps
    return f"{value:.{decimals}f}"


def _frame(draw: ImageDraw.ImageDraw, box: Box, title: str, xlabel: str, ylabel: str) -> None:
    left, top, right, bottom = box
    draw.text(((left + right) / 2, top - 50), title, fill="black", font=font(18), anchor="ma")
    draw.text(((left + right) / 2, bottom + 40), xlabel, fill="black", font=font(15), anchor="ma")
    draw.text((left - 70, top - 22), ylabel, fill="black", font=font(15))
    draw.rectangle([left, top, right, bottom], outline="black", width=1)


def histogram_panel(
    values: Sequence[float],
    title: str,
    xlabel: str,
    markers: Sequence[tuple[float, str]] = (),
    bins: int = 20,
    colour: tuple[int, int, int] = BLUE,
    ylabel: str = "users",
    centre: float | None = None,
) -> Callable[[ImageDraw.ImageDraw, Box], None]:
    """A histogram of ``values`` (how many in each bin: ``ylabel``) with labelled vertical
    ``markers`` (value, label) in red; with ``centre``, one bin is centred there (e.g. 0, so
    that users a change left unchanged have a bar of their own)."""

    def draw_panel(draw: ImageDraw.ImageDraw, box: Box) -> None:
        left, top, right, bottom = box
        points = [v for v in values if v == v] + [m for m, _ in markers]
        low, high = (min(points), max(points)) if points else (0.0, 1.0)
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
        pad = (high - low) * 0.05
        low, high = low - pad, high + pad
        width = (high - low) / bins
        if centre is not None:  # shift the edges so that ``centre`` is a bin's middle
            low = centre - width * (math.ceil((centre - low) / width - 0.5) + 0.5)
            high = max(high, low + width * bins)
        bins_here = math.ceil((high - low) / width - 1e-9)
        high = low + width * bins_here
        counts = [0] * bins_here
        for v in values:
            if v == v:
                counts[min(bins_here - 1, int((v - low) / width))] += 1
        top_count = max(counts + [1])
        x = lambda v: left + (right - left) * (v - low) / (high - low)  # noqa: E731
        y = lambda c: bottom - (bottom - top - 10) * c / top_count  # noqa: E731
        _frame(draw, box, title, xlabel, ylabel)
        ticks = nice_ticks(low, high)
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
        for tick in ticks:
            draw.line([x(tick), bottom, x(tick), bottom + 5], fill="black")
            label = _tick_label(tick, step)
            draw.text((x(tick), bottom + 8), label, fill="black", font=font(13), anchor="ma")
        for tick in nice_ticks(0, top_count, 5):
            if tick <= top_count:
                draw.line([left - 5, y(tick), left, y(tick)], fill="black")
                draw.text(
                    (left - 8, y(tick)), f"{tick:g}", fill="black", font=font(13), anchor="rm"
                )
        for index, count in enumerate(counts):
            if count:
                x0, x1 = x(low + index * width), x(low + (index + 1) * width)
                draw.rectangle([x0 + 1, y(count), x1 - 1, bottom], fill=colour)
        for index, (value, label) in enumerate(markers):
            draw.line([x(value), top, x(value), bottom], fill=RED, width=3)
            anchor = "la" if x(value) < (left + right) / 2 else "ra"
            shift = 6 if anchor == "la" else -6
            draw.text(
                (x(value) + shift, top + 6 + 20 * index),
                label,
                fill=RED,
                font=font(14),
                anchor=anchor,
            )

    return draw_panel


def bars_panel(
    labels: Sequence[str], values: Sequence[float], title: str, xlabel: str
) -> Callable[[ImageDraw.ImageDraw, Box], None]:
    """Horizontal bars, one per label, each with its value written at its end; the axis runs
    from a little below the smallest value (at most 0.5, chance for accuracies) to 1."""

    def draw_panel(draw: ImageDraw.ImageDraw, box: Box) -> None:
        left, top, right, bottom = box
        shown = [(label, v) for label, v in zip(labels, values) if v == v]
        low = min([0.5] + [v - 0.05 for _, v in shown])
        low = math.floor(low * 10) / 10
        x = lambda v: left + (right - left) * (v - low) / (1.0 - low)  # noqa: E731
        _frame(draw, box, title, xlabel, "")
        for tick in nice_ticks(low, 1.0):
            draw.line([x(tick), top, x(tick), bottom], fill=GREY)
            draw.text(
                (x(tick), bottom + 8), f"{tick:.1f}", fill="black", font=font(13), anchor="ma"
            )
        row = (bottom - top) / max(len(shown), 1)
        for index, (label, value) in enumerate(shown):
            y0 = top + index * row
            colour = BLUE if index % 2 == 0 else ORANGE
            draw.rectangle([left, y0 + row * 0.45, x(value), y0 + row * 0.85], fill=colour)
            draw.text((left + 6, y0 + row * 0.42), label, fill="black", font=font(14), anchor="ld")
            draw.text(
                (x(value) - 4, y0 + row * 0.65), f"{value:.3f}", fill="white", font=font(14),
                anchor="rm",
            )  # fmt: skip

    return draw_panel
