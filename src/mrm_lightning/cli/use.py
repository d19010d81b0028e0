"""``mrm adapt`` and ``mrm score``: a trained checkpoint in use, from the command line.

mrm adapt --ckpt best.ckpt --pairs user.jsonl --out profile.json
mrm adapt --ckpt best.ckpt --pairs pairs.jsonl --store profiles.db        (every user in the file)
mrm score --ckpt best.ckpt --profile profile.json --input candidates.jsonl --out scores.jsonl
mrm score --ckpt best.ckpt --store profiles.db --user u17 --input - --out -

Plain argparse, not LightningCLI: nothing is trained. Errors end with one line
``mrm: error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ..data.records import LoadSummary, PreferenceRecord, RecordError, require
from .errors import ArgumentParser, fail

STDIN = "<stdin>"
CHUNK = 64  # candidate lines embedded together


def parser() -> argparse.ArgumentParser:
    top = ArgumentParser(
        prog="mrm", description="Use a trained checkpoint: adapt users, score responses."
    )
    commands = top.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    adapt = commands.add_parser(
        "adapt",
        help="adapt the model to users from their pairs",
        description="Adapt the model to a user from their preference pairs, and save the "
        "profile (--out) or add it to a profile store (--store).",
    )
    adapt.add_argument("--pairs", required=True, help="pairs file (.jsonl / .csv), - for stdin")
    adapt.add_argument(
        "--user",
        help="the user whose lines to use; without it --out needs a file of one user, and "
        "--store adapts every user of the file",
    )
    where = adapt.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="write the profile (JSON) here, - for stdout")
    where.add_argument("--store", help="add or replace the profiles in this SQLite store")
    score = commands.add_parser(
        "score",
        help="score candidate responses for a user",
        description='Score candidates, one JSON line each: {"prompt": ..., "responses": [...], '
        '"id"?, "user_id"?}; writes {"id"?, "scores": [...], "ranking": [...]} per line '
        "(ranking: indices, best first). Without --profile or --store, the model's prior.",
    )
    given = score.add_mutually_exclusive_group()
    given.add_argument("--profile", help="a profile made by mrm adapt")
    given.add_argument("--store", help="a profile store; the user is --user or each line's user_id")
    score.add_argument("--user", help="with --store: the user whose profile scores every line")
    score.add_argument("--input", required=True, help="candidates (JSON lines), - for stdin")
    score.add_argument("--out", required=True, help="scores (JSON lines), - for stdout")
    for command in (adapt, score):
        command.add_argument("--ckpt", required=True, help="the trained checkpoint (.ckpt)")
        command.add_argument("--cache-dir", help="embedding cache to read and fill (optional)")
        command.add_argument("--device", default="auto", help="where the encoder runs")
        command.add_argument("--quiet", action="store_true", help="no progress bar")
    return top


def run(command: str, argv: list[str], from_sys_argv: bool = False) -> None:
    """Run ``mrm adapt ...`` or ``mrm score ...`` (``argv``: the arguments after the command)."""
    args = parser().parse_args([command, *argv])
    if args.command == "score" and args.user and not args.store:
        fail("--user needs --store")
    progress = not args.quiet and sys.stderr.isatty()
    if not progress:  # the weight-loading bar of transformers too: stderr stays for errors
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    try:
        from ..use.inference import PersonalizedRewardModel

        model = PersonalizedRewardModel.from_checkpoint(
            args.ckpt, device=args.device, cache_dir=args.cache_dir, progress=progress
        )
        (adapt_command if args.command == "adapt" else score_command)(model, args, progress)
    except (ValueError, OSError, sqlite3.Error) as error:
        fail(str(error))


# ------------------------------------------------------------------ adapt
def read_user_pairs(path: str) -> tuple[list[PreferenceRecord], LoadSummary]:
    """``read_pairs`` on a file or stdin, with its file:line: field errors."""
    from ..data.sources.pairs import read_pairs

    summary = LoadSummary(STDIN if path == "-" else path)
    if path != "-":
        return read_pairs(path, summary), summary
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "stdin.jsonl"
        copy.write_text(sys.stdin.read(), encoding="utf-8")
        try:
            return read_pairs(copy, summary), summary
        except RecordError as error:
            raise RecordError(STDIN, error.line, error.field_name, error.problem) from None


def adapt_command(model, args, progress: bool) -> None:
    records, summary = read_user_pairs(args.pairs)
    if summary.dropped and not args.quiet:
        print(summary, file=sys.stderr)
    by_user: dict[str, list[PreferenceRecord]] = {}
    for record in records:
        by_user.setdefault(record.user, []).append(record)
    if args.user is not None:
        if args.user not in by_user:
            raise ValueError(f"{summary.source} has no usable pair of user {args.user!r}")
        by_user = {args.user: by_user[args.user]}
    elif args.out is not None and len(by_user) != 1:
        raise ValueError(
            f"{summary.source} holds pairs of {len(by_user)} users: choose one with --user"
        )
    profiles = model.adapt_many(by_user)
    if args.out is not None:
        (profile,) = profiles.values()
        with output(args.out) as handle:
            handle.write(profile.to_json() + "\n")
        return
    from ..use.profiles import ProfileStore

    with ProfileStore(args.store, checkpoint=model.digest) as store, store.transaction():
        for user, profile in profiles.items():
            store.put(user, profile)


# ------------------------------------------------------------------ score
def score_command(model, args, progress: bool) -> None:
    from tqdm.auto import tqdm

    from ..use.inference import ranking
    from ..use.profiles import ProfileStore, UserProfile

    fixed = None
    if args.profile is not None:
        fixed = UserProfile.from_json(Path(args.profile).read_text(encoding="utf-8"))
        model.check_profile(fixed)
    store = ProfileStore(args.store, checkpoint=model.digest) if args.store else None
    found: dict[str, Any] = {}

    def profile_of(line: int, row: dict, name: str):
        if store is None:
            return fixed
        user = args.user or str(require(row, "user_id", (str, int), name, line))
        if user not in found:
            found[user] = store.get(user)
            if found[user] is None:
                raise RecordError(name, line, "user_id", f"no profile of {user!r} in {args.store}")
            model.check_profile(found[user])
        return found[user]

    name = STDIN if args.input == "-" else args.input
    with opened(args.input) as source, output(args.out) as sink:
        lines = tqdm(json_lines(source, name), unit="line", desc="scoring", disable=not progress)
        for chunk in chunks(lines, CHUNK):
            rows = [(line, row, candidate(row, name, line)) for line, row in chunk]
            items = [(h, p, r) for *_, (h, p, responses) in rows for r in responses]
            vectors = model.embed(items)
            start = 0
            for line, row, (_, _, responses) in rows:
                part = vectors[start : start + len(responses)]
                start += len(responses)
                scores = model.score_embeddings(part, profile_of(line, row, name))
                answer = {"id": row["id"]} if "id" in row else {}
                answer |= {"scores": scores, "ranking": ranking(scores)}
                sink.write(json.dumps(answer) + "\n")
    if store is not None:
        store.close()


def candidate(row: dict, name: str, line: int) -> tuple[tuple, str, list[str]]:
    """(history, prompt, responses) of a candidates line, checked field by field."""
    prompt = require(row, "prompt", str, name, line)
    responses = require(row, "responses", list, name, line)
    if not responses or not all(isinstance(r, str) for r in responses):
        raise RecordError(name, line, "responses", "expected a non-empty list of strings")
    history = row.get("history") or []
    try:
        turns = tuple(
            (t["role"], t["content"]) if isinstance(t, dict) else tuple(t) for t in history
        )
        if not all(len(t) == 2 and all(isinstance(x, str) for x in t) for t in turns):
            raise TypeError
    except (TypeError, KeyError, ValueError):
        raise RecordError(name, line, "history", "expected [role, content] turns") from None
    return turns, prompt, responses


def json_lines(handle: IO[str], name: str) -> Iterator[tuple[int, dict]]:
    """``(line, object)`` per non-blank line, errors naming the file and line."""
    for number, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise RecordError(name, number, "<json>", f"not valid JSON ({error.msg})") from None
        if not isinstance(value, dict):
            raise RecordError(name, number, "<json>", "expected a JSON object")
        yield number, value


def chunks(iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@contextmanager
def opened(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdin
        return
    with open(path, encoding="utf-8") as handle:
        yield handle


@contextmanager
def output(path: str) -> Iterator[IO[str]]:
    """stdout for ``-``; else a file that appears whole, only once everything is written."""
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=target.parent or ".", prefix=f".{target.name}.", delete=False
    )
    try:
        with handle:
            yield handle
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
