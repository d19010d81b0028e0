"""The README's "your own data in five minutes", measured: a pairs CSV with its own column names
(``annotator,question,good_answer,bad_answer``), two opposed groups of users (half prefer short
answers, half long ones), fitted with ``configs/pairs.yaml`` and nothing else but the paths and
the column mapping.

    python experiments/own_data.py --users 30 --pairs 20 --out runs/own_data   [--seeds 0 1 2]

Texts come from the toy text population's bank (offline): each pair is a short and a long
answer to one question, alike in every other respect (formality, warmth, example, bullets).
A user agrees with their group's taste on ``--agreement`` of their pairs. Prints, per seed,
MRM vs the global model on unseen users (held-out pairs; selection on validation users).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

from mrm_lightning.data.sources.text_bank import ALL_ATTRIBUTES, TOPICS, Attributes, render

COLUMNS = "{user_id: annotator, prompt: question, chosen: good_answer, rejected: bad_answer}"


def write_own_pairs(
    path: Path, users: int = 30, pairs: int = 20, agreement: float = 0.9, seed: int = 0
) -> Path:
    """``users`` x ``pairs`` comparisons in a CSV with a user's own column names; users
    ``u00``, ``u02``, ... prefer short answers, the others long ones."""
    rng = random.Random(seed)
    rows = []
    for u in range(users):
        prefers_long = u % 2 == 1
        for index in rng.sample(range(len(TOPICS)), min(pairs, len(TOPICS))):
            topic = TOPICS[index]
            style = rng.choice(ALL_ATTRIBUTES)._replace(long=False)
            variant = rng.randrange(3)
            short = render(topic, style, variant)
            long = render(topic, Attributes(*style)._replace(long=True), variant)
            likes_long = prefers_long if rng.random() < agreement else not prefers_long
            good, bad = (long, short) if likes_long else (short, long)
            rows.append({"annotator": f"u{u:02d}", "question": topic.prompt,
                         "good_answer": good, "bad_answer": bad})  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--agreement", type=float, default=0.9)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("runs/own_data"))
    args, extra = parser.parse_known_args()
    from mrm_lightning.training.lightning_cli import fit_and_report

    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        data = write_own_pairs(args.out / f"pairs_{seed}.csv", args.users, args.pairs,
                               args.agreement, seed)  # fmt: skip
        results = fit_and_report(
            ["--config", "configs/pairs.yaml", "--data.source.init_args.paths", f"[{data}]",
             "--data.source.init_args.columns", COLUMNS, "--seed_everything", str(seed),
             "--data.seed", str(seed), *extra],
            args.out / f"seed{seed}",
        )  # fmt: skip
        rows = results["user_level_accuracy"]
        print(json.dumps({"seed": seed, "mrm_unseen": rows["MRM (adapted)"]["unseen"],
                          "global_unseen": rows["global reward model"]["unseen"],
                          "val_user_acc": results["val_user_acc"],
                          "selected": results.get("selected_adaptation", {}).get("prior")}),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
