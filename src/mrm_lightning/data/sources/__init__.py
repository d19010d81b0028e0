"""Where preference data comes from: one file per source, its reader beside it.

Real text: :mod:`.tldr` (Reddit TL;DR), :mod:`.prism` (PRISM), :mod:`.pairs` and :mod:`.ratings`
(your own files; :mod:`.columns` what they share), all on :mod:`.text` (records -> cached
embeddings). Simulated users: :mod:`.synthetic` (embeddings only, the default),
:mod:`.text_population` (real encoder, generated texts), :mod:`.semisynthetic` (real texts,
simulated tastes).
"""
