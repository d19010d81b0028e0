"""Reddit TL;DR comparisons (OpenAI "summarize from feedback"), from local files or the hub.

One JSON object per line: ``info`` {id, post, title, subreddit}, ``summaries`` [2 x {text}],
``choice`` (0/1, the preferred summary), ``worker`` (the labeller: our user), ``split``.
Rows about news articles (``info.article`` instead of ``info.post``) are skipped and counted.
The prompt is the post in the format the summaries were written for; the unit is the post id,
so every comparison of one post lands on the same side of every split.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jsonargparse import lazy_instance

from ..encoder import TextEncoder
from ..records import (
    TEST_SPLIT,
    TRAIN_SPLIT,
    LoadSummary,
    PreferenceRecord,
    RecordError,
    pair_or_drop_reason,
    read_json_lines,
    require,
)
from .text import TextPreferences

HUB_NAME, HUB_CONFIG = "openai/summarize_from_feedback", "comparisons"


def tldr_prompt(info: dict[str, Any]) -> str:
    """The post as the summarization policies saw it."""
    return (
        f"SUBREDDIT: r/{info.get('subreddit') or ''}\nTITLE: {info.get('title') or ''}\n"
        f"POST: {info['post']}\nTL;DR:"
    )


def release_split(value: Any) -> str | None:
    """The release's own split: train, or held out (valid1 / valid2 / validation / test)."""
    if value is None:
        return None
    text = str(value).lower()
    if text == "train":
        return TRAIN_SPLIT
    return TEST_SPLIT if text.startswith("valid") or text == "test" else None


def comparison_to_record(
    row: dict[str, Any], path: str, line: int | str, summary: LoadSummary
) -> PreferenceRecord | None:
    """One comparison row -> a record, None when dropped (counted), RecordError if malformed."""
    info = require(row, "info", dict, path, line)
    if "post" not in info or info["post"] is None:
        summary.drop(
            "not a post comparison (news article)" if "article" in info else "no post text"
        )
        return None
    worker = require(row, "worker", str, path, line)
    summaries = require(row, "summaries", list, path, line)
    if len(summaries) != 2:
        raise RecordError(path, line, "summaries", f"expected 2 summaries, got {len(summaries)}")
    texts = []
    for index, item in enumerate(summaries):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise RecordError(path, line, f"summaries[{index}].text", "missing or not a string")
        texts.append(item["text"])
    choice = row.get("choice")
    if isinstance(choice, float) and choice.is_integer():  # 1.0 from some JSON writers
        choice = int(choice)
    if type(choice) is not int or choice not in (0, 1):
        summary.drop("missing or invalid choice")
        return None
    post_id = require(info, "id", str, path, f"{line} (info)")
    chosen, rejected = texts[choice], texts[1 - choice]
    prompt = tldr_prompt(info)
    reason = pair_or_drop_reason(chosen, rejected)
    if reason:
        summary.drop(reason)
        return None
    summary.kept += 1
    return PreferenceRecord(
        user=worker,
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        unit=post_id,
        split=release_split(row.get("split")),
        origin=f"{path}:{line}",
    )


def read_tldr(
    paths: Iterable[str | Path], summary: LoadSummary | None = None
) -> list[PreferenceRecord]:
    """Every usable comparison in local JSON-lines batch files, in file order."""
    summary = summary if summary is not None else LoadSummary("tldr")
    records = []
    for path in paths:
        for line, row in read_json_lines(path):
            record = comparison_to_record(row, str(path), line, summary)
            if record is not None:
                records.append(record)
    return records


def load_tldr_hub(
    splits: Iterable[str] = ("train", "validation"), summary: LoadSummary | None = None
) -> list[PreferenceRecord]:
    """The published dataset through `datasets` (needs hub access; the same row logic)."""
    from datasets import load_dataset

    summary = summary if summary is not None else LoadSummary(HUB_NAME)
    records = []
    for split in splits:
        for index, row in enumerate(load_dataset(HUB_NAME, HUB_CONFIG, split=split)):
            record = comparison_to_record(row, f"{HUB_NAME}[{split}]", index, summary)
            if record is not None:
                records.append(record)
    return records


class RedditTLDR(TextPreferences):
    """Reddit TL;DR comparisons: local JSON-lines batch files, or the hub dataset if none.

    Args:
        paths: batch files in the OpenAI format; empty reads ``openai/summarize_from_feedback``.
    """

    def __init__(
        self,
        paths: list[str] | None = None,
        encoder: TextEncoder = lazy_instance(TextEncoder),
        cache_dir: str = ".cache/mrm-embeddings",
        progress: bool = True,
    ) -> None:
        super().__init__(encoder, cache_dir, progress)
        self.paths = [str(Path(p)) for p in paths or []]

    def read_records(self, summary: LoadSummary) -> list[PreferenceRecord]:
        return read_tldr(self.paths, summary) if self.paths else load_tldr_hub(summary=summary)
