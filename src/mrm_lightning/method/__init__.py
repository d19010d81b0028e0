"""The method as maths on plain tensors: reward heads, MAML inner loops, the posterior, losses,
metrics, fits and selection rules. No Lightning, no data formats; everything else builds on it.
"""
