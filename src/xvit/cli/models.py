"""``xvit models``: the bundled models with their measured accuracy, and the accepted model specs."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "List the bundled models (with the accuracy line of their model card) and the model specs."


def run(args: argparse.Namespace) -> int:
    from xvit.models import SPEC_FORMS, bundled_models, model_card

    bundled = bundled_models()
    print("Bundled models:")
    if not bundled:
        print("  (none installed)")
    width = max((len(n) for n in bundled), default=0)
    for name in bundled:
        print(f"  {name.ljust(width)}  {_card_line(model_card(name))}")
    print()
    print("Model specs accepted by --model:")
    width = max(len(form) for form, _ in SPEC_FORMS)
    for form, meaning in SPEC_FORMS:
        print(f"  {form.ljust(width)}  {meaning}")
    return 0


def _card_line(card: str) -> str:
    """The model card's accuracy line, else its first line of text."""
    lines = [ln.strip(" -*|#\t") for ln in card.splitlines() if ln.strip(" -*|#\t")]
    return next((ln for ln in lines if "accuracy" in ln.lower()), lines[0] if lines else "(no model card)")
