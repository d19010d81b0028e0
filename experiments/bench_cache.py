"""Benchmark: a 3-seed run on SBIC's real texts encodes each text once.

    OMP_NUM_THREADS=2 python experiments/bench_cache.py                  # cap 200 (default)
    OMP_NUM_THREADS=2 python experiments/bench_cache.py --max-pairs-per-user 200 20

SBIC (``../shared/data/sbic/ratings.csv``: ``user_id,text,score``, 12,325 ratings by 198
annotators of 4,666 posts) is read by path through ``RatingsFiles``, whose seeded
``max_pairs_per_user`` cap keeps a different sample of each annotator's pairs per seed, so
each seed asks for a different set of texts. For each cap, into a fresh cache folder, seeds 0,
1 and 2 run one after the other as separate ``mrm fit`` runs would: a fresh encoder (the
bundled all-MiniLM-L6-v2 on the CPU) and ``TextPreferences.embeddings`` on the seed's distinct
texts, timed whole (identity hash, cache lookup, model load if anything is new, encoding,
writing the segment). It prints per seed the seconds, the texts requested, the texts encoded
and how many of those an earlier seed had already encoded (must be 0), then the ratio of
seeds 1-2's seconds to seed 0's (target < 5%: a seed only pays for texts no earlier seed
had). The ratio depends on how many texts are genuinely new: a small cap (20) draws many
texts no earlier seed drew, and those must be encoded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SBIC = REPO.parent / "shared/data/sbic/ratings.csv"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SBIC, help="SBIC's ratings.csv (read in place)")
    p.add_argument(
        "--max-pairs-per-user",
        type=int,
        nargs="+",
        default=[200],
        help="RatingsFiles caps to measure, each with a fresh cache (200: its default)",
    )
    p.add_argument("--seeds", type=int, default=3)
    return p.parse_args(argv)


def run_seed(data: Path, cap: int, seed: int, cache_dir: str, seen: set) -> dict:
    """One seed as its own run would do it: read, then embed (timed), counting what the
    encoder receives."""
    from mrm_lightning import RatingsFiles, TextEncoder
    from mrm_lightning.data.sources.text import index_texts

    encoder = TextEncoder(device="cpu")
    encoded: list = []
    encode_batch = encoder.encode_batch

    def counting(items):
        encoded.extend(items)
        return encode_batch(items)

    encoder.encode_batch = counting  # this instance only: counts the texts the model gets
    source = RatingsFiles(
        [str(data)],
        max_pairs_per_user=cap,
        seed=seed,
        encoder=encoder,
        cache_dir=cache_dir,
        progress=False,
    )
    items = index_texts(source.records())[0]
    started = time.perf_counter()
    table = source.embeddings(items)
    seconds = time.perf_counter() - started
    assert len(table) == len(items)
    again = sum(item in seen for item in encoded)
    seen.update(items)
    return {"seconds": seconds, "requested": len(items), "encoded": len(encoded), "again": again}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.data.is_file():
        sys.exit(
            f"bench_cache: {args.data} is absent: this benchmark reads SBIC from ../shared "
            "beside the clone (or give --data PATH to ratings.csv)"
        )
    warnings.filterwarnings("ignore")
    from lightning.pytorch.utilities import disable_possible_user_warnings

    disable_possible_user_warnings()
    import logging

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" per seed: noise

    print(f"SBIC: {args.data}; all-MiniLM-L6-v2 on CPU, {torch.get_num_threads()} threads")
    for cap in args.max_pairs_per_user:
        print(f"\nmax_pairs_per_user={cap}, fresh cache")
        print("seed  seconds  requested  encoded  encoded-again")
        seen: set = set()
        rows = []
        with tempfile.TemporaryDirectory() as cache_dir:
            for seed in range(args.seeds):
                row = run_seed(args.data, cap, seed, cache_dir, seen)
                rows.append(row)
                print(
                    f"{seed:>4}  {row['seconds']:7.1f}  {row['requested']:9d}  "
                    f"{row['encoded']:7d}  {row['again']:13d}",
                    flush=True,
                )
        later = sum(r["seconds"] for r in rows[1:])
        print(
            f"seeds 1-{args.seeds - 1} / seed 0: {later:.1f} s / {rows[0]['seconds']:.1f} s = "
            f"{later / rows[0]['seconds']:.1%} (each: "
            + ", ".join(f"{r['seconds'] / rows[0]['seconds']:.1%}" for r in rows[1:])
            + f"); texts encoded {sum(r['encoded'] for r in rows[1:])} / {rows[0]['encoded']}"
        )


if __name__ == "__main__":
    main()
