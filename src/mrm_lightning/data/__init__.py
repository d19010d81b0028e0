"""Preference data: records and readers (:mod:`.sources`), splits, episodes, the episodic data
module, the frozen text encoder and its embedding cache. Builds on :mod:`mrm_lightning.method`.
"""
