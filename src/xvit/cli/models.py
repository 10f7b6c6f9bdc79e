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
    """The model card's measured accuracy (its first bold line that gives a percentage), else its first line."""
    lines = [ln.strip() for ln in card.splitlines() if ln.strip()]
    measured = next((ln for ln in lines if ln.startswith("**") and "%" in ln), None)
    if measured is not None:
        return measured.split("**")[1]
    text = [ln.strip(" -*|#\t") for ln in lines if ln.strip(" -*|#\t")]
    return text[0] if text else "(no model card)"
