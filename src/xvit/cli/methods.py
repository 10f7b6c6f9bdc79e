"""``xvit methods``: the method registry as a table."""

from __future__ import annotations

import argparse

import xvit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "List the registered explanation methods with their cost in passes and citation."


def run(args: argparse.Namespace) -> int:
    registry = xvit.methods()
    rows = [("name", "signed", "passes", "citation")] + [
        (name, "yes" if info.get("signed") else "no", str(info.get("passes", "")),
         str(info.get("citation", ""))) for name, info in registry.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
    return 0
