"""``xvit evaluate`` (being moved here from xvit.evaluate.runner)."""

from xvit.evaluate.runner import add_evaluate_arguments as add_arguments
from xvit.evaluate.runner import run_evaluate as run

__all__ = ["add_arguments", "run"]
