"""``xvit train`` (being moved here from xvit.train)."""

from xvit.train import add_train_arguments as add_arguments
from xvit.train import run_train as run

__all__ = ["add_arguments", "run"]
