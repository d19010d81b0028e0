"""``mrm adapt`` and ``mrm score``: a trained checkpoint in use, from the command line.

mrm adapt --ckpt best.ckpt --pairs user.jsonl --out profile.json
mrm adapt --ckpt best.ckpt --pairs pairs.jsonl --store profiles.db        (every user in the file)
mrm score --ckpt best.ckpt --profile profile.json --input candidates.jsonl --out scores.jsonl
mrm score --ckpt best.ckpt --store profiles.db --user u17 --input - --out -

Files are read with the column names of the files the checkpoint was trained on (its
``mrm_columns``: a pairs file's user_id, prompt, chosen and rejected; a ratings file's
user_id and prompt); ``--columns`` replaces them. Plain argparse, not LightningCLI: nothing is
trained. Errors end with one line ``mrm: error: ...`` on stderr and exit status 2
(:mod:`.errors`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ..data.records import LoadSummary, PreferenceRecord, RecordError, not_utf8, require
from .errors import ArgumentParser, debug_mode, fail

STDIN = "<stdin>"
CHUNK = 64  # candidate lines embedded together
SCORE_FIELDS = ("user_id", "prompt")  # what --columns may rename in a candidates line


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
    where.add_argument(
        "--store",
        help="add or replace the profiles in this store (an SQLite file or postgresql:// URL)",
    )
    adapt.add_argument(
        "--append",
        action="store_true",
        help="with --store: add the file's pairs to those stored for each user and adapt from "
        "all of them (without it, the file's pairs replace them)",
    )
    score = commands.add_parser(
        "score",
        help="score candidate responses for a user",
        description='Score candidates, one JSON line each: {"prompt": ..., "responses": [...], '
        '"id"?, "user_id"?}; writes {"id"?, "scores": [...], "ranking": [...]} per line '
        "(ranking: indices, best first; with --std, reward_std too). Without --profile or "
        "--store, the model's prior.",
    )
    given = score.add_mutually_exclusive_group()
    given.add_argument("--profile", help="a profile made by mrm adapt")
    given.add_argument("--store", help="a profile store; the user is --user or each line's user_id")
    score.add_argument("--user", help="with --store: the user whose profile scores every line")
    score.add_argument("--input", required=True, help="candidates (JSON lines), - for stdin")
    score.add_argument("--out", required=True, help="scores (JSON lines), - for stdout")
    score.add_argument(
        "--std",
        action="store_true",
        help="also each score's standard deviation under the user's posterior (reward_std)",
    )
    for command, fields in (
        (adapt, "user_id, prompt, chosen, rejected"),
        (score, "user_id, prompt"),
    ):
        command.add_argument(
            "--columns",
            help=f"the file's own names of our fields ({fields}) as JSON, e.g. "
            '\'{"user_id": "annotator"}\'; replaces the names of the files the checkpoint '
            "was trained on (the default); '{}': the standard names",
        )
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
    if args.command == "adapt" and args.append and not args.store:
        fail("--append needs --store")
    progress = not args.quiet and sys.stderr.isatty()
    if not progress:  # the weight-loading bar of transformers too: stderr stays for errors
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    from ..use.inference import PersonalizedRewardModel

    try:
        model = PersonalizedRewardModel.from_checkpoint(
            args.ckpt, device=args.device, cache_dir=args.cache_dir, progress=progress
        )
        (adapt_command if args.command == "adapt" else score_command)(model, args, progress)
    except OSError as error:  # one naming no file: the encoder's (transformers names it)
        if error.filename is not None or debug_mode():
            raise  # cli/main.py names the file; --debug shows the traceback
        fail(str(error))


def columns_of(model, args, fields: tuple[str, ...]) -> tuple[dict[str, str], str | None]:
    """The file's names of ``fields`` and, where they are the checkpoint's, a note for errors:
    ``--columns`` (JSON) where given, else the checkpoint's ``mrm_columns``."""
    from ..data.sources.columns import check_columns
    from ..data.sources.pairs import pairs_columns

    if args.columns is None:
        columns = {k: v for k, v in pairs_columns(model.columns).items() if k in fields}
        named = ", ".join(f"{k} as {v!r}" for k, v in columns.items())
        return columns, named and f"the checkpoint's files name {named}; --columns overrides"
    try:
        columns = json.loads(args.columns)
    except json.JSONDecodeError as error:
        fail(f"--columns: not valid JSON ({error.msg}): {args.columns}")
    check_columns(columns, fields, "--columns")
    return columns, None


def with_note(error: ValueError, columns: dict[str, str], note: str | None) -> ValueError:
    """``error`` with ``note`` added where it is about one of the checkpoint's columns."""
    if note and any(repr(column) in str(error) for column in columns.values()):
        return ValueError(f"{error} ({note})")
    return error


# ------------------------------------------------------------------ adapt
def read_user_pairs(
    path: str, columns: dict[str, str]
) -> tuple[list[PreferenceRecord], LoadSummary]:
    """``read_pairs`` on a file or stdin, with its file:line: field errors."""
    from ..data.sources.pairs import read_pairs

    summary = LoadSummary(STDIN if path == "-" else path)
    if path != "-":
        return read_pairs(path, summary, columns), summary
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "stdin.jsonl"
        try:
            copy.write_text(sys.stdin.read(), encoding="utf-8")
        except UnicodeError:  # strict stdin fails reading; surrogate-escaping stdin, writing
            raise RecordError(STDIN, "?", "<encoding>", "not UTF-8 text") from None
        try:
            return read_pairs(copy, summary, columns), summary
        except RecordError as error:
            raise RecordError(STDIN, error.line, error.field_name, error.problem) from None


def adapt_command(model, args, progress: bool) -> None:
    from ..data.sources.pairs import ADAPT_FIELDS

    columns, note = columns_of(model, args, ADAPT_FIELDS)
    try:
        records, summary = read_user_pairs(args.pairs, columns)
    except ValueError as error:
        raise with_note(error, columns, note) from None
    if (summary.dropped or summary.users_without_pairs()) and not args.quiet:
        print(summary, file=sys.stderr)
    if not records:
        raise ValueError(f"{summary.source}: no usable pair was read; {summary.reasons()}")
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
    if args.out is not None:
        (profile,) = model.adapt_many(by_user).values()
        with output(args.out) as handle:
            handle.write(profile.to_json() + "\n")
        return
    from ..use.store import ProfileStore

    # opened before adapting: a store that cannot be used fails now, not after the encoder
    with ProfileStore(args.store, checkpoint=model.digest) as store, store.transaction():
        new = {user: [pair_dict(r) for r in records] for user, records in by_user.items()}
        store.lock_users(list(new))  # other writers of these users wait (PostgreSQL replicas)
        if args.append:  # read, adapt and write in one transaction: nothing stored is lost
            new = {user: unseen_pairs(store.judgements(user), pairs) for user, pairs in new.items()}
            given = {user: store.judgements(user) + pairs for user, pairs in new.items()}
        else:
            given = new
        profiles = model.adapt_many(given)
        for user, profile in profiles.items():
            store.put(user, profile)
            store.set_judgements(user, new[user], append=args.append)


def pair_dict(record: PreferenceRecord) -> dict:
    """A pair as the store keeps it (what POST /adapt and /feedback store)."""
    history = [list(turn) for turn in record.history]
    return {"prompt": record.prompt, "chosen": record.chosen, "rejected": record.rejected,
            "history": history}  # fmt: skip


def unseen_pairs(stored: list[dict], pairs: list[dict]) -> list[dict]:
    """``pairs`` less those already ``stored`` (the same judgement twice would weigh double),
    compared as ``/feedback`` compares them."""
    from ..use.request_bodies import pair_key

    known = {pair_key(pair) for pair in stored}
    return [pair for pair in pairs if pair_key(pair) not in known]


# ------------------------------------------------------------------ score
def score_command(model, args, progress: bool) -> None:
    from ..data.sources.columns import named_as_in_file
    from ..use.store import ProfileStore

    columns, note = columns_of(model, args, SCORE_FIELDS)
    fixed = None if args.profile is None else read_profile(model, args.profile)
    from ..use.store_postgres import is_postgres_url

    # scoring only reads: never make a store file
    if args.store and not is_postgres_url(args.store) and not Path(args.store).exists():
        raise ValueError(f"{args.store}: no such profile store (mrm adapt --store makes one)")
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

    try:
        with named_as_in_file(columns):
            score_lines(model, args, progress, columns, profile_of)
    except ValueError as error:
        raise with_note(error, columns, note) from None
    finally:
        if store is not None:
            store.close()


def score_lines(model, args, progress: bool, columns: dict[str, str], profile_of) -> None:
    """Score each candidates line of ``--input`` into ``--out``."""
    from tqdm.auto import tqdm

    from ..use.inference import ranking

    name = STDIN if args.input == "-" else args.input
    with opened(args.input) as source, output(args.out) as sink:
        lines = tqdm(json_lines(source, name), unit="line", desc="scoring", disable=not progress)
        for chunk in chunks(lines, CHUNK):
            chunk = [(line, renamed(row, columns)) for line, row in chunk]
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
                if args.std:
                    answer["reward_std"] = model.reward_moments(part, profile_of(line, row, name))[
                        1
                    ]
                sink.write(json.dumps(answer) + "\n")


def read_profile(model, path: str):
    """A profile made by ``mrm adapt``, checked against the model; errors name the file."""
    from ..use.profiles import ProfileError, UserProfile

    try:
        profile = UserProfile.from_json(Path(path).read_text(encoding="utf-8"))
        model.check_profile(profile)
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not a profile: not UTF-8 text") from None
    except ProfileError as error:
        raise ProfileError(f"{path}: {error}") from None
    return profile


def renamed(row: dict, columns: dict[str, str]) -> dict:
    """A line with our field names (``columns``: field -> the file's name of it)."""
    row = dict(row)
    for field, column in columns.items():
        if column != field:
            value = row.pop(column, None)
            row.pop(field, None)  # our name is not the file's: not this field
            if value is not None:
                row[field] = value
    return row


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
    try:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except (ValueError, RecursionError) as error:  # JSONDecodeError, too-long numbers
                problem = getattr(error, "msg", None) or "nested too deeply or numbers too long"
                raise RecordError(name, number, "<json>", f"not valid JSON ({problem})") from None
            if not isinstance(value, dict):
                raise RecordError(name, number, "<json>", "expected a JSON object")
            yield number, value
    except UnicodeDecodeError as error:  # a file's line is found from its bytes
        if name == STDIN:
            raise RecordError(name, "?", "<encoding>", "not UTF-8 text") from None
        raise not_utf8(name, error) from None


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
