"""The error types a user of xvit can catch, re-exported from where they are raised (see docs/errors.md).

Every one is a ``ValueError``, ``TypeError`` or ``OSError`` subclass, so ``except ValueError`` also works."""

from __future__ import annotations

from xvit.adapters.base import UnsupportedModelError
from xvit.data.preprocess import ImageLoadError
from xvit.data.sources.base import DataNotFoundError, DataSpecError
from xvit.models import CheckpointError
from xvit.params import InvalidParameterError
from xvit.training.config import TrainConfigError

__all__ = ["CheckpointError", "DataNotFoundError", "DataSpecError", "DOCUMENTED_ERRORS", "ImageLoadError",
           "InvalidParameterError", "TrainConfigError", "UnsupportedModelError"]

DOCUMENTED_ERRORS: tuple[type[Exception], ...] = (
    InvalidParameterError, ImageLoadError, UnsupportedModelError, CheckpointError, DataSpecError, TrainConfigError,
    ValueError, TypeError, KeyError, OSError,
)
"""What xvit raises for bad inputs: its own types, and the built-in ones its validation raises with a message that
names the problem and the fix."""
