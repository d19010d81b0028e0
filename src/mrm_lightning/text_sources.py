"""Real preference data as a PreferenceSource: records -> distinct texts -> cached embeddings.

Each distinct (conversation so far, prompt, response) is encoded once, however many pairs it
appears in; a second run with the same inputs takes the embeddings from the cache without
loading the encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from jsonargparse import lazy_instance
from lightning.pytorch.utilities import rank_zero_info

from .cache import ArrowEmbeddings, EmbeddingCache, fingerprint, texts_digest
from .encoder import TextEncoder, TextInput
from .preferences import PreferenceData, PreferenceSource
from .records import TEST_SPLIT, TRAIN_SPLIT, LoadSummary, PreferenceRecord
from .splits import TEST, TRAIN, UNUSED


def index_texts(
    records: list[PreferenceRecord],
) -> tuple[list[TextInput], torch.Tensor, torch.Tensor]:
    """Distinct text inputs in first-seen order, and each record's chosen / rejected row."""
    rows: dict[TextInput, int] = {}

    def row_of(history: tuple, prompt: str, response: str) -> int:
        return rows.setdefault((history, prompt, response), len(rows))

    chosen = [row_of(r.history, r.prompt, r.chosen) for r in records]
    rejected = [row_of(r.history, r.prompt, r.rejected) for r in records]
    return list(rows), torch.tensor(chosen), torch.tensor(rejected)


def ids_of(values: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Integer ids for strings, in first-seen order, and the list of distinct strings."""
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(v, len(ids)) for v in values]), list(ids)


class TextPreferences(PreferenceSource):
    """Base of the real-data sources: subclasses only read their format into records.

    Args:
        encoder: the frozen model that embeds (prompt, response); default all-MiniLM-L6-v2.
        cache_dir: where embeddings are cached (Arrow, memory-mapped).
        progress: show a progress bar while encoding.
    """

    def __init__(
        self,
        encoder: TextEncoder = lazy_instance(TextEncoder),
        cache_dir: str = ".cache/mrm-embeddings",
        progress: bool = True,
    ) -> None:
        self.encoder, self.cache, self.progress = encoder, EmbeddingCache(cache_dir), progress
        self._records: list[PreferenceRecord] | None = None
        self.summary: LoadSummary | None = None

    def read_records(self, summary: LoadSummary) -> list[PreferenceRecord]:
        raise NotImplementedError

    @property
    def embedding_dim(self) -> int:
        return self.encoder.embedding_dim

    def records(self) -> list[PreferenceRecord]:
        if self._records is None:
            self.summary = LoadSummary(type(self).__name__)
            self._records = self.read_records(self.summary)
            if not self._records:
                raise ValueError(f"{type(self).__name__}: no usable pair was read\n{self.summary}")
            rank_zero_info(str(self.summary))
        return self._records

    def cache_key(self, items: list[TextInput], identity: dict | None = None) -> str:
        """What was encoded (every text, in order) and how (the encoder's identity)."""
        identity = self.encoder.identity() if identity is None else identity
        return fingerprint({"texts": texts_digest(items), "encoder": identity})

    def embeddings(self, items: list[TextInput]) -> ArrowEmbeddings:
        """From the cache, or encoded now and cached (atomically)."""
        identity = self.encoder.identity()
        key = self.cache_key(items, identity)
        cached = self.cache.load(key)
        if cached is not None:
            rank_zero_info(f"embeddings of {len(items)} texts from cache {self.cache.path(key)}")
            return cached
        rank_zero_info(f"encoding {len(items)} distinct texts with {identity['model']}")
        vectors = self.encoder.encode(items, progress=self.progress)
        return self.cache.save(key, vectors, {"encoder": identity, "texts": len(items)})

    def prepare(self) -> None:
        """Make sure the embeddings are cached (the data module's prepare_data)."""
        self.embeddings(index_texts(self.records())[0])

    def load(self) -> PreferenceData:
        records = self.records()
        items, chosen, rejected = index_texts(records)
        user, user_ids = ids_of([r.user for r in records])
        unit, _ = ids_of([r.unit for r in records])
        split_code = {TRAIN_SPLIT: TRAIN, TEST_SPLIT: TEST, None: UNUSED}
        given = torch.tensor([split_code[r.split] for r in records])
        return PreferenceData(
            embeddings=self.embeddings(items),
            user=user,
            chosen=chosen,
            rejected=rejected,
            unit=unit,
            user_ids=user_ids,
            given_split=None if (given == UNUSED).all() else given,
        ).validate(origin=type(self).__name__)


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
        from .sources.tldr import load_tldr_hub, read_tldr

        return read_tldr(self.paths, summary) if self.paths else load_tldr_hub(summary=summary)


class PRISM(TextPreferences):
    """PRISM alignment conversations: local files, or the hub dataset if none are given.

    Args:
        conversations: path of ``conversations.jsonl``; None reads the hub dataset.
        survey: path of ``survey.jsonl``, to drop users with no completed conversation.
        history: which earlier turns a prompt's history holds. paired_turns: only turns that
            made a pair, as the reference MRM protocol; chosen_turns: every turn with a user
            message and a chosen response.
    """

    def __init__(
        self,
        conversations: str | None = None,
        survey: str | None = None,
        history: Literal["paired_turns", "chosen_turns"] = "paired_turns",
        encoder: TextEncoder = lazy_instance(TextEncoder),
        cache_dir: str = ".cache/mrm-embeddings",
        progress: bool = True,
    ) -> None:
        from .sources.prism import check_history

        check_history(history)
        super().__init__(encoder, cache_dir, progress)
        self.conversations, self.survey, self.history = conversations, survey, history

    def read_records(self, summary: LoadSummary) -> list[PreferenceRecord]:
        from .sources.prism import load_prism_hub, read_prism

        if self.conversations is None:
            return load_prism_hub(summary, self.history)
        return read_prism(self.conversations, self.survey, summary, self.history)


class PairsFiles(TextPreferences):
    """Your own pairs: JSON lines or CSV with ``user_id, prompt, chosen, rejected[, split]``.

    Args:
        paths: the files (``.jsonl`` / ``.json`` / ``.csv``).
        columns: the files' own names of our fields, e.g. ``{user_id: annotator, chosen:
            better}``; fields not named keep their names. Fields: user_id, prompt, chosen,
            rejected, split, unit.
    """

    def __init__(
        self,
        paths: list[str],
        encoder: TextEncoder = lazy_instance(TextEncoder),
        cache_dir: str = ".cache/mrm-embeddings",
        progress: bool = True,
        columns: dict[str, str] | None = None,
    ) -> None:
        from .sources.generic import PAIR_FIELDS, check_columns

        check_columns(columns, PAIR_FIELDS, "PairsFiles.columns")
        super().__init__(encoder, cache_dir, progress)
        self.paths, self.columns = list(paths), columns

    def read_records(self, summary: LoadSummary) -> list[PreferenceRecord]:
        from .sources.generic import read_pairs

        return [record for path in self.paths for record in read_pairs(path, summary, self.columns)]


class RatingsFiles(TextPreferences):
    """Per-user ratings ``user_id, [prompt,] text, score`` turned into pairs within each user.

    Args:
        paths: the files (``.jsonl`` / ``.json`` / ``.csv``).
        max_pairs_per_user: a seeded sample caps each user's pairs.
        item_groups: without prompts, each text falls in one of this many groups by a seeded
            hash, the same for every user; pairs form within a group, and a group is the split
            unit, so no rated text is on two sides of a split for anybody.
        seed: seeds grouping and sampling.
        columns: the files' own names of our fields, e.g. ``{score: offensiveness, user_id:
            annotator_id}``; fields not named keep their names. Fields: user_id, prompt, text,
            score.
    """

    def __init__(
        self,
        paths: list[str],
        max_pairs_per_user: int = 200,
        item_groups: int = 10,
        seed: int = 0,
        encoder: TextEncoder = lazy_instance(TextEncoder),
        cache_dir: str = ".cache/mrm-embeddings",
        progress: bool = True,
        columns: dict[str, str] | None = None,
    ) -> None:
        from .sources.generic import RATING_FIELDS, check_columns

        check_columns(columns, RATING_FIELDS, "RatingsFiles.columns")
        super().__init__(encoder, cache_dir, progress)
        self.paths, self.max_pairs_per_user = list(paths), max_pairs_per_user
        self.item_groups, self.seed, self.columns = item_groups, seed, columns

    def read_records(self, summary: LoadSummary) -> list[PreferenceRecord]:
        from .sources.generic import read_ratings

        return [
            record
            for path in self.paths
            for record in read_ratings(
                path, self.max_pairs_per_user, self.seed, self.item_groups, summary, self.columns
            )
        ]
