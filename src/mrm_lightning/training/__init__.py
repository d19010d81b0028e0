"""Meta-training with Lightning: the MRM LightningModule, its evaluation and settings checks,
fitting from data before training, RPO, the results report, checkpoints, LightningCLI.
"""
