"""The benchmark's outputs: results.json, results.md and shots.png (drawn with Pillow, which
tensorboard already brings; matplotlib is not a dependency)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .grids import describe
from .protocol import mean_std

COLUMNS = (
    ("seen", "seen"),
    ("unseen", "unseen"),
    ("overall", "overall"),
    ("worst10_unseen", "worst 10% unseen"),
)
COLOURS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
    (148, 103, 189), (140, 86, 75), (227, 119, 194), (23, 190, 207),
)  # fmt: skip


def summarise(records: list[dict]) -> dict[str, dict]:
    """Per method: mean and std over seeds of every column, of the shots curve, and times."""
    summary: dict[str, dict] = {}
    for method in dict.fromkeys(r["method"] for r in records):
        runs = [r for r in records if r["method"] == method]
        entry = {
            key: dict(zip(("mean", "std"), mean_std([r[key] for r in runs]))) for key, _ in COLUMNS
        }
        entry["seeds"] = [r["seed"] for r in runs]
        entry["train_s"] = mean_std([r["train_s"] for r in runs])[0]
        entry["eval_s"] = mean_std([r["eval_s"] for r in runs])[0]
        entry["val_user_acc"] = mean_std([r["val_user_acc"] for r in runs])[0]
        entry["shots_unseen"] = {
            n: dict(zip(("mean", "std"), mean_std([r["shots_unseen"][n] for r in runs])))
            for n in runs[0]["shots_unseen"]
        }
        summary[method] = entry
    return summary


def markdown_table(summary: dict[str, dict]) -> str:
    """The results table: accuracy mean ± std over seeds, seconds per run (means)."""
    head = "| method | " + " | ".join(name for _, name in COLUMNS) + " | train s | eval s |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for method, entry in summary.items():
        cells = [f"{entry[k]['mean']:.3f} ± {entry[k]['std']:.3f}" for k, _ in COLUMNS]
        times = f"{entry['train_s']:.1f} | {entry['eval_s']:.1f}"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {times} |")
    return "\n".join(lines)


def worst_users_line(summary: dict[str, dict], reference: str = "mrm_rpo") -> str:
    """Which method has the best mean accuracy of the worst 10% of unseen users, and how far
    ``reference`` (MRM with RPO) is from it (or ahead of the next method)."""
    score = {method: entry["worst10_unseen"]["mean"] for method, entry in summary.items()}
    best = max(score, key=score.get)
    line = f"Best worst-10% unseen accuracy: {best} ({score[best]:.3f})"
    others = [value for method, value in score.items() if method != best]
    if reference in score and reference != best and score[reference] == score[best]:
        line += f"; {reference} ties with it."
    elif reference in score and reference != best:
        line += f"; {reference} is {score[reference] - score[best]:+.3f} from it."
    elif reference == best and others:
        line += f", ahead of the next method by {score[best] - max(others):.3f}."
    return line


def tuning_table(records: list[dict], grid_file) -> str:
    """The budget and what validation chose, per method and seed (``mrm bench --grid``)."""
    seeds = sorted({r["seed"] for r in records})
    sizes = {len(r["grid"]) for r in records if "grid" in r}
    lines = [
        f"Every method tuned alike ({grid_file}): {', '.join(map(str, sorted(sizes)))} trained "
        "settings per method and seed, each keeping its in-fit candidates (L2, pull or "
        "adaptation strength), all chosen on validation users. Chosen (validation accuracy):",
        "",
        "| method | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for method in dict.fromkeys(r["method"] for r in records if "grid" in r):
        cells = []
        for seed in seeds:
            run = next((r for r in records if r["method"] == method and r["seed"] == seed), None)
            cells.append(f"{describe(run['settings'])} ({run['val_user_acc']:.3f})" if run else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(records: list[dict], args) -> dict:
    """Write results.json, results.md and shots.png into ``args.out``; return the summary."""
    out = Path(args.out)
    summary = summarise(records)
    seeds = sorted({r["seed"] for r in records})
    payload = {
        "config": str(args.config),
        "seeds": seeds,
        "max_epochs_override": args.max_epochs,
        # --data.* settings given on the command line, on top of the config's data section
        "data_overrides": list(getattr(args, "data_overrides", [])),
        "grid": str(args.grid) if getattr(args, "grid", None) else None,
        "summary": summary,
        "runs": records,
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    text = [
        f"# Benchmark: {args.config}",
        "",
        f"Test user-level accuracy, mean ± std over seeds {seeds}; every method chose its "
        "checkpoint and settings on validation users only. Worst 10% unseen: mean accuracy of "
        "the 10% of unseen users each method fits worst. Seconds: mean per seed.",
        "",
        markdown_table(summary),
        "",
        worst_users_line(summary),
        "",
        "![unseen-user accuracy against training pairs](shots.png)",
        "",
    ]
    if any("grid" in r for r in records):
        text[-2:-2] = [tuning_table(records, getattr(args, "grid", None)), ""]
    if args.max_epochs is not None:
        text.insert(2, f"Trained methods ran {args.max_epochs} epochs (--max_epochs).\n")
    if getattr(args, "data_overrides", None):
        text.insert(2, f"Data settings on top of the config: `{' '.join(args.data_overrides)}`\n")
    (out / "results.md").write_text("\n".join(text))
    plot_shots(summary, out / "shots.png", title=f"Unseen users, {Path(args.config).name}")
    return payload


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def plot_shots(
    summary: dict[str, dict],
    path: Path,
    title: str,
    xlabel: str = "user's training pairs used for adaptation",
) -> None:
    """Unseen-user accuracy against the user's training pairs used, a line per method with
    a band of ± one std over seeds; x positions are evenly spaced (1, 2, 4, ..., all)."""
    width, height, left, right, top, bottom = 1100, 640, 90, 300, 60, 80
    image = Image.new("RGBA", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(20), _font(16)
    labels = list(next(iter(summary.values()))["shots_unseen"])
    curves = {m: [e["shots_unseen"][n]["mean"] for n in labels] for m, e in summary.items()}
    # a curve drawn over by a later identical one is named in the legend, not lost
    hidden = {
        method: later
        for i, method in enumerate(curves)
        for later in list(curves)[i + 1 :]
        if max(abs(a - b) for a, b in zip(curves[method], curves[later])) < 1e-9
    }
    values = [
        (e["shots_unseen"][n]["mean"], e["shots_unseen"][n]["std"])
        for e in summary.values()
        for n in labels
    ]
    low = min(m - s for m, s in values)
    high = max(m + s for m, s in values)
    low, high = max(0.0, (int(low * 20) / 20)), min(1.0, (int(high * 20) + 1) / 20)
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(i: int) -> float:
        return left + plot_w * i / max(1, len(labels) - 1)

    def y(v: float) -> float:
        return top + plot_h * (high - min(max(v, low), high)) / (high - low)

    tick = low
    while tick <= high + 1e-9:
        draw.line([left, y(tick), left + plot_w, y(tick)], fill=(225, 225, 225), width=1)
        draw.text((left - 10, y(tick)), f"{tick:.2f}", fill="black", font=small, anchor="rm")
        tick += 0.05
    for i, label in enumerate(labels):
        draw.text((x(i), top + plot_h + 10), label, fill="black", font=small, anchor="ma")
    draw.text(
        (left + plot_w / 2, height - 30),
        xlabel,
        fill="black",
        font=font,
        anchor="ma",
    )
    draw.text((20, top - 26), "unseen-user test accuracy", fill="black", font=font)
    draw.text((left + plot_w / 2, 4), title, fill="black", font=font, anchor="ma")
    bands = Image.new("RGBA", image.size, (0, 0, 0, 0))
    band_draw = ImageDraw.Draw(bands)
    for index, entry in enumerate(summary.values()):
        colour = COLOURS[index % len(COLOURS)]
        points = [entry["shots_unseen"][n] for n in labels]
        upper = [(x(i), y(p["mean"] + p["std"])) for i, p in enumerate(points)]
        lower = [(x(i), y(p["mean"] - p["std"])) for i, p in enumerate(points)]
        band_draw.polygon(upper + lower[::-1], fill=(*colour, 40))
    image = Image.alpha_composite(image, bands)
    draw = ImageDraw.Draw(image)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black", width=2)
    for index, (method, entry) in enumerate(summary.items()):
        colour = COLOURS[index % len(COLOURS)]
        line = [(x(i), y(entry["shots_unseen"][n]["mean"])) for i, n in enumerate(labels)]
        draw.line(line, fill=colour, width=3)
        for px, py in line:
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
        legend_y = top + 10 + 30 * index
        legend_x = width - right + 20
        draw.line([legend_x, legend_y, legend_x + 40, legend_y], fill=colour, width=4)
        label = method + (f" (under {hidden[method]})" if method in hidden else "")
        draw.text((legend_x + 50, legend_y), label, fill="black", font=small, anchor="lm")
    image.convert("RGB").save(path)
