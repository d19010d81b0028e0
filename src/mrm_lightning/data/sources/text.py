"""Real preference data as a PreferenceSource: records -> distinct texts -> cached embeddings.

Each distinct (conversation so far, prompt, response) is encoded once, however many pairs it
appears in, and once whatever the run: the cache is keyed per text, so a run (another seed,
another subset) encodes only the texts no earlier run encoded with the same encoder, and a run
with nothing new takes every embedding from the cache without loading the encoder.
"""

from __future__ import annotations

import torch
from jsonargparse import lazy_instance
from lightning.pytorch.utilities import rank_zero_info

from ..cache import ArrowEmbeddings, EmbeddingCache, text_digests
from ..encoder import TextEncoder, TextInput
from ..preferences import PreferenceData, PreferenceSource
from ..records import TEST_SPLIT, TRAIN_SPLIT, LoadSummary, PreferenceRecord
from ..splits import TEST, TRAIN, UNUSED


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

    def embeddings(self, items: list[TextInput]) -> ArrowEmbeddings:
        """Each text from the cache, or encoded now: only the texts not cached yet go through
        the encoder, and are cached (atomically) as one new segment."""
        identity = self.encoder.identity()
        digests = text_digests(items)
        missing = self.cache.missing(identity, digests)
        folder = self.cache.folder(identity)
        if missing:
            new = [items[i] for i in missing]
            rank_zero_info(
                f"encoding {len(new)} of {len(items)} texts with {identity['model']} "
                f"(the other {len(items) - len(new)} from the cache {folder})"
            )
            vectors = self.encoder.encode(new, progress=self.progress)
            self.cache.add(identity, [digests[i] for i in missing], vectors)
        else:
            rank_zero_info(f"embeddings of {len(items)} texts from the cache {folder}")
        return self.cache.table(identity, digests)

    def prepare(self) -> None:
        """Make sure the embeddings are cached (the data module's prepare_data)."""
        self.embeddings(self.texts())

    def texts(self) -> list[TextInput]:
        """The distinct texts: row ``i`` of the embedding table is ``texts()[i]``."""
        return index_texts(self.records())[0]

    def load(self) -> PreferenceData:
        return self.pairs_over(self.embeddings(self.texts()))

    def pairs_over(self, embeddings) -> PreferenceData:
        """The records' pairs over ``embeddings``, one row per text of :meth:`texts` (its
        vectors, or a ``[T, 0]`` table where only who judged which texts matters: stage 0)."""
        records = self.records()
        _, chosen, rejected = index_texts(records)
        user, user_ids = ids_of([r.user for r in records])
        unit, _ = ids_of([r.unit for r in records])
        split_code = {TRAIN_SPLIT: TRAIN, TEST_SPLIT: TEST, None: UNUSED}
        given = torch.tensor([split_code[r.split] for r in records])
        return PreferenceData(
            embeddings=embeddings,
            user=user,
            chosen=chosen,
            rejected=rejected,
            unit=unit,
            user_ids=user_ids,
            given_split=None if (given == UNUSED).all() else given,
        ).validate(origin=type(self).__name__)
