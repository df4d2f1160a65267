"""The user errors of hard-sample mining (``tools/mine_hard.py`` ends them with one line, not a traceback)."""
from __future__ import annotations


class MiningError(ValueError):
    """Base of the mining errors: bad scored data, target files, model files or selection settings."""


class FeatureSpecMismatchError(MiningError):
    """A difficulty model's feature layout differs from the data it is given (or its two files disagree); the
    message names the file and every difference (betas count, a missing part, the rotation representation)."""


class MiningFileNotFoundError(MiningError, FileNotFoundError):
    """A model, spec or target file that is not there (the message names it)."""
