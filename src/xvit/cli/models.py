"""``xvit models``: the bundled models with their measured accuracy, and the accepted model specs; ``xvit models
NAME``: a bundled model's card and checkpoint path."""

from __future__ import annotations

import argparse

from xvit.cli.common import UsageError
from xvit.registry import did_you_mean


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("List the bundled models (with the measured accuracy from their model card) and the model "
                          "specs; with NAME, print that model's checkpoint path and model card.")
    parser.add_argument("name", nargs="?", metavar="NAME", help="a bundled model whose card to print")


def run(args: argparse.Namespace) -> int:
    from xvit.models import SPEC_FORMS, bundled_model_dir, bundled_models, model_card

    bundled = bundled_models()
    if args.name is not None:
        if args.name not in bundled:
            raise UsageError(f"no bundled model {args.name!r}.{did_you_mean(args.name, bundled)} Bundled: "
                             f"{', '.join(bundled) or 'none installed'}.")
        print(f"checkpoint: {bundled_model_dir(args.name)}")
        print(f"load it with: xvit.load_model({args.name!r}) or --model {args.name}")
        print()
        print(model_card(args.name).rstrip() or "(this checkpoint has no MODEL_CARD.md)")
        return 0
    print("Bundled models:")
    if not bundled:
        print("  (none installed)")
    width = max((len(n) for n in bundled), default=0)
    for name in bundled:
        print(f"  {name.ljust(width)}  {_card_line(model_card(name))}")
    if bundled:
        print("  ('xvit models NAME' prints a model's card and checkpoint path)")
    print()
    print("Model specs accepted by --model:")
    width = max(len(form) for form, _ in SPEC_FORMS)
    for form, meaning in SPEC_FORMS:
        print(f"  {form.ljust(width)}  {meaning}")
    return 0


def _card_line(card: str) -> str:
    """The model card's measured accuracy (its first bold line that gives a percentage), else its first line of
    text that is not a heading."""
    lines = [ln.strip() for ln in card.splitlines() if ln.strip()]
    measured = next((ln for ln in lines if ln.startswith("**") and "%" in ln), None)
    if measured is not None:
        return measured.split("**")[1]
    text = [ln.strip(" -*|\t") for ln in lines if not ln.startswith("#") and ln.strip(" -*|\t")]
    return text[0] if text else "(no model card)"
