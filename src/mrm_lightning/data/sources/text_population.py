"""A built-in toy population of TEXTS with known tastes: a text model from a fresh clone.

Nothing is downloaded or read from a file. Everyday prompts come from a small bank
(:mod:`.text_bank`); each prompt gets one response for every combination of five
readable attributes (32 responses), all built from the same hand-written content:

    long     the answer plus "Here is why: ..." and "One more tip: ..." (else one sentence)
    formal   formal openers, closers and numbered lists (else casual ones and contractions)
    example  a closing "For example, ..." sentence
    warm     a friendly opener and closer (else a curt one, or none)
    bullets  the answer as a list of three points

The texts never depend on the seed, and the embedding cache is keyed per text: other users
(seed, num_users, ...) encode only the texts of prompts no earlier run used. Users are
dealt in turn to a few types (``concise``, ``detailed``, ``formal``, ``friendly``; see TASTES),
and user u's true reward is linear in the attributes:

    r_u(response) = sharpness * (taste[type(u)] + individual_spread * e_u) . attributes

with e_u a standard normal deviation of the user's own. A user judges random pairs of two
responses to one prompt; labels are drawn from Bradley-Terry, P(a preferred to b) =
sigmoid(r_u(a) - r_u(b)), and the true margin r_u(chosen) - r_u(rejected) is the oracle row.

It is for demos and tests of adapt, score and serve on real text embeddings, where the right
answer is known and readable ("concise-008 prefers short, blunt answers"); it is not a
benchmark of real people's preferences.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from jsonargparse import lazy_instance

from ..encoder import TextEncoder
from ..preferences import PreferenceData
from ..records import LoadSummary, PreferenceRecord
from .text import TextPreferences
from .text_bank import ALL_ATTRIBUTES, ATTRIBUTES, TOPICS, Attributes, render

# Weight of each attribute (long, formal, example, warm, bullets) in a type's reward. Every
# type's main attribute is opposed by another type's (long: concise vs detailed; formal vs
# friendly), so one global reward model gets them wrong; what the types share (examples and
# lists, mildly) is what a global model can learn.
TASTES: dict[str, tuple[float, ...]] = {
    "concise": (-2.0, 0.0, -0.5, -0.5, 1.0),
    "detailed": (2.0, 0.0, 1.0, 0.0, 0.5),
    "formal": (0.0, 2.0, 0.5, -1.0, 0.5),
    "friendly": (0.0, -1.0, 0.5, 2.0, -0.5),
}


class TextPopulation(TextPreferences):
    """A built-in toy population of texts with known tastes, for demos and tests of adapt,
    score and serve; not a benchmark of real preferences. No file, no download.

    Every prompt of a small bank has 32 responses, one per combination of five attributes
    (long, formal, example, warm, bullets). Users are dealt in turn to types (concise,
    detailed, formal, friendly) whose true rewards weigh the attributes differently, plus a
    small deviation of their own; labels are Bradley-Terry draws from the true rewards, which
    also give the oracle row. The split unit is the prompt. The texts do not depend on the seed.

    Args:
        num_users: how many users; ids read ``<type>-<index>``, e.g. ``concise-007``.
        min_pairs: fewest pairs a user judges.
        max_pairs: most pairs a user judges (counts are uniform in between).
        num_types: user types, the first this many of concise, detailed, formal, friendly.
        num_prompts: prompts used from the bank (32 texts each to encode); 0 uses all.
        individual_spread: std of each user's own deviation from the type's attribute weights.
        sharpness: scale of the true rewards; higher means less label noise.
        seed: users, pairs and labels are drawn from this seed.
        encoder: the frozen model that embeds (prompt, response); default all-MiniLM-L6-v2.
        cache_dir: where embeddings are cached (Arrow, memory-mapped).
        progress: show a progress bar while encoding.
    """

    def __init__(
        self,
        num_users: int = 120,
        min_pairs: int = 40,
        max_pairs: int = 80,
        num_types: int = 4,
        num_prompts: int = 0,
        individual_spread: float = 0.3,
        sharpness: float = 1.5,
        seed: int = 0,
        encoder: TextEncoder = lazy_instance(TextEncoder),
        cache_dir: str = ".cache/mrm-embeddings",
        progress: bool = True,
    ) -> None:
        if not 1 <= num_types <= len(TASTES):
            raise ValueError(f"num_types must be in [1, {len(TASTES)}], got {num_types}")
        if num_users < 1:
            raise ValueError(f"num_users must be >= 1, got {num_users}")
        if not 0 <= num_prompts <= len(TOPICS) or num_prompts == 1:
            raise ValueError(f"num_prompts must be 0 (all) or in [2, {len(TOPICS)}]")
        num_candidates = (
            (num_prompts or len(TOPICS)) * len(ALL_ATTRIBUTES) * (len(ALL_ATTRIBUTES) - 1) // 2
        )
        if not 1 <= min_pairs <= max_pairs <= num_candidates:
            raise ValueError(
                f"need 1 <= min_pairs <= max_pairs <= {num_candidates} (the distinct pairs), "
                f"got {min_pairs}, {max_pairs}"
            )
        if sharpness <= 0 or individual_spread < 0:
            raise ValueError("need sharpness > 0 and individual_spread >= 0")
        super().__init__(encoder, cache_dir, progress)
        self.num_users, self.min_pairs, self.max_pairs = num_users, min_pairs, max_pairs
        self.num_types, self.num_prompts = num_types, num_prompts or len(TOPICS)
        self.individual_spread, self.sharpness, self.seed = individual_spread, sharpness, seed
        # the truth, drawn with the records: each user's [5] attribute weights (sharpness
        # included), and every response's attributes
        self.user_weights: dict[str, torch.Tensor] = {}
        self.response_attributes: dict[tuple[str, str], Attributes] = {}

    def responses(self, prompt_index: int) -> list[tuple[Attributes, str]]:
        """The 32 responses to a bank prompt, with their attributes, in attribute-code order."""
        topic = TOPICS[prompt_index]
        return [(a, render(topic, a, prompt_index + code)) for code, a in enumerate(ALL_ATTRIBUTES)]

    def true_reward(self, user: str, prompt: str, response: str) -> float:
        """User ``user``'s true reward of one of the population's responses."""
        self.records()  # draws the truth on first use
        attributes = torch.tensor(self.response_attributes[(prompt, response)], dtype=torch.float)
        return float(self.user_weights[user] @ attributes)

    def read_records(self, summary: LoadSummary) -> list[PreferenceRecord]:
        gen = torch.Generator().manual_seed(self.seed)
        texts = [self.responses(p) for p in range(self.num_prompts)]
        self.response_attributes = {
            (TOPICS[p].prompt, text): a for p in range(self.num_prompts) for a, text in texts[p]
        }
        per_prompt = [len({text for _, text in responses}) for responses in texts]
        assert min(per_prompt) == len(ALL_ATTRIBUTES), "two attribute sets gave the same text"

        names = list(TASTES)[: self.num_types]
        user_type = torch.arange(self.num_users) % self.num_types
        tastes = torch.tensor([TASTES[name] for name in names])
        own = torch.randn(self.num_users, len(ATTRIBUTES), generator=gen)
        weights = self.sharpness * (tastes[user_type] + self.individual_spread * own)  # [N, 5]
        user_ids = [f"{names[t]}-{u:03d}" for u, t in enumerate(user_type.tolist())]
        self.user_weights = dict(zip(user_ids, weights))

        # candidates: (prompt, response a, response b), a < b; each user draws distinct ones
        first, second = torch.triu_indices(len(ALL_ATTRIBUTES), len(ALL_ATTRIBUTES), offset=1)
        num_candidates = self.num_prompts * len(first)
        counts = torch.randint(self.min_pairs, self.max_pairs + 1, (self.num_users,), generator=gen)
        picks = torch.cat([torch.randperm(num_candidates, generator=gen)[:n] for n in counts])
        user = torch.repeat_interleave(torch.arange(self.num_users), counts)
        prompt, variant = picks // len(first), picks % len(first)
        a, b = first[variant], second[variant]
        features = torch.tensor(ALL_ATTRIBUTES, dtype=torch.float)  # [32, 5]
        margin = ((features[a] - features[b]) * weights[user]).sum(-1)
        a_wins = torch.rand(len(picks), generator=gen) < torch.sigmoid(margin)

        records = []
        for i, (u, p, x, y, win) in enumerate(
            zip(user.tolist(), prompt.tolist(), a.tolist(), b.tolist(), a_wins.tolist())
        ):
            chosen, rejected = (x, y) if win else (y, x)
            records.append(
                PreferenceRecord(
                    user=user_ids[u],
                    prompt=TOPICS[p].prompt,
                    chosen=texts[p][chosen][1],
                    rejected=texts[p][rejected][1],
                    unit=TOPICS[p].prompt,  # a prompt stays on one side of the split for all
                    origin=f"TextPopulation:pair {i}",
                )
            )
        summary.kept += len(records)
        return records

    def load(self) -> PreferenceData:
        """The encoded pairs (the base class's, in record order) with their true margins."""
        data = super().load()
        margin = [
            self.true_reward(r.user, r.prompt, r.chosen)
            - self.true_reward(r.user, r.prompt, r.rejected)
            for r in self.records()
        ]
        return replace(data, oracle_margin=torch.tensor(margin)).validate(origin="TextPopulation")
