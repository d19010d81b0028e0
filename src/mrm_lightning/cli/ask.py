"""``mrm ask``: which comparisons to ask a user next, most informative first.

mrm ask --ckpt best.ckpt --candidates pool.jsonl --k 5 --out -                   (a new user)
mrm ask --ckpt best.ckpt --profile profile.json --candidates pool.jsonl --k 5 --out -
mrm ask --ckpt best.ckpt --store profiles.db --user u17 --candidates pool.jsonl --out -

A candidates line is ``{"prompt", "a", "b", "history"?, "id"?}``: a comparison the user could
be asked (``chosen``/``rejected`` are read as ``a``/``b``: which is which does not matter).
Written: the chosen lines, in the order to ask them, each with ``line`` (its line in the
candidates file) and ``order``. The choice is the expected information gain about the user's
weights under the posterior of their profile (none: the prior's); with ``--store`` the pairs
already stored for the user are never asked again. Ask, adapt (``mrm adapt --append``), ask
again: each choice then uses every answer so far.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..data.records import RecordError, require
from .errors import ArgumentParser, fail
from .use import STDIN, json_lines, opened, output, read_profile


def parser() -> ArgumentParser:
    ask = ArgumentParser(
        prog="mrm ask",
        description="Choose the comparisons to ask a user next (expected information gain "
        "about their weights), most informative first.",
    )
    ask.add_argument("--ckpt", required=True, help="the trained checkpoint (.ckpt)")
    given = ask.add_mutually_exclusive_group()
    given.add_argument("--profile", help="the user's profile (mrm adapt --out); none: a new user")
    given.add_argument("--store", help="a profile store (SQLite file or postgresql:// URL)")
    ask.add_argument("--user", help="with --store: the user (a new one gets the prior)")
    ask.add_argument(
        "--candidates", required=True, help='comparisons, JSON lines {"prompt", "a", "b"}'
    )
    ask.add_argument("--k", type=int, default=1, help="how many to choose (default 1)")
    ask.add_argument("--out", required=True, help="the chosen lines (JSON lines), - for stdout")
    ask.add_argument("--cache-dir", help="embedding cache to read and fill (optional)")
    ask.add_argument("--device", default="auto", help="where the encoder runs")
    return ask


def read_candidates(path: str) -> list[tuple[int, dict]]:
    """(line, row) of each candidate, checked field by field."""
    name = STDIN if path == "-" else path
    rows = []
    with opened(path) as source:
        for line, row in json_lines(source, name):
            first = "a" if "a" in row or "chosen" not in row else "chosen"
            second = "b" if first == "a" else "rejected"
            require(row, "prompt", str, name, line)
            for field in (first, second):
                require(row, field, str, name, line)
            history = row.get("history") or []
            if not isinstance(history, list):
                raise RecordError(name, line, "history", "expected [role, content] turns")
            rows.append((line, row))
    if not rows:
        raise RecordError(name, "-", "<file>", "no candidates")
    return rows


def run(command: str, argv: list[str], from_sys_argv: bool = False) -> None:
    args = parser().parse_args(argv)
    if (args.store is None) != (args.user is None):
        fail("--store and --user go together")
    if args.k < 1:
        fail(f"--k must be >= 1, got {args.k}")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    from ..use.inference import PersonalizedRewardModel

    model = PersonalizedRewardModel.from_checkpoint(
        args.ckpt, device=args.device, cache_dir=args.cache_dir
    )
    candidates = read_candidates(args.candidates)
    profile, answered = None, []
    if args.profile is not None:
        profile = read_profile(model, args.profile)
    elif args.store is not None:
        from ..use.store import ProfileStore
        from ..use.store_postgres import is_postgres_url

        if not is_postgres_url(args.store) and not Path(args.store).exists():
            raise ValueError(f"{args.store}: no such profile store (mrm adapt --store makes one)")
        with ProfileStore(args.store, checkpoint=model.digest) as store:
            profile, answered = store.get(args.user), store.judgements(args.user)
    chosen = model.next_pairs(profile, [row for _, row in candidates], args.k, answered)
    with output(args.out) as sink:
        for order, index in enumerate(chosen):
            line, row = candidates[index]
            sink.write(json.dumps({**row, "line": line, "order": order}) + "\n")
    if len(chosen) < args.k:
        print(f"note: only {len(chosen)} candidates were left to ask", file=sys.stderr)
