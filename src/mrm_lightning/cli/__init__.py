"""The command line (``mrm``): the one place that parses command lines.

One module per command family (:mod:`.train` fit/validate/test/predict through LightningCLI,
:mod:`.embed`, :mod:`.use` adapt and score, :mod:`.serve`, :mod:`.bench`), dispatched from the
table in :mod:`.main`; every command fails the same way (:mod:`.errors`). Nothing in the library
imports this package.
"""

from .main import main

__all__ = ["main"]
