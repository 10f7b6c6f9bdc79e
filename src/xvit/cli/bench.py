"""``xvit bench``: time and peak memory of methods against plain passes measured in the same run."""

from __future__ import annotations

import argparse
import os
import sys

from xvit.adapters import UnsupportedModelError
from xvit.cli.common import MAIN_METHODS, UsageError, check_methods, device, load_model, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Time per image (median of --repeats after a warm-up) and peak memory of each method, and "
                          "their ratios to a plain forward and forward+backward pass of the same model measured in "
                          "the same run. CPU memory is the peak RSS increase sampled from /proc/self/statm; CUDA "
                          "memory is torch.cuda.max_memory_allocated.")
    parser.add_argument("--model", default="xvit-random:tiny",
                        help="model spec, e.g. xvit-random:PRESET or timm-random:NAME (default: xvit-random:tiny)")
    parser.add_argument("--method", "--methods", dest="methods", nargs="+", metavar="M", default=MAIN_METHODS,
                        help="methods to time (default: the main methods)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per call (default: 8)")
    parser.add_argument("--image-size", type=positive_int, default=None,
                        help="input side in pixels (default: the model's input size)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed calls per method (default: 5)")
    parser.add_argument("--device", default="cpu", help="device to run on (default: cpu)")


def run(args: argparse.Namespace) -> int:
    import torch

    from xvit.bench import format_table, run_benchmark

    methods = check_methods(args.methods)
    dev = device(args.device)
    model = load_model(args.model, args.image_size).to(dev)
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > cpus:
        print(f"note: load average {load:.1f} on {cpus} CPUs; other processes compete with the benchmark, "
              "so timings are noisy", file=sys.stderr)
    try:
        rows = run_benchmark(model, methods, batch_size=args.batch_size, image_size=args.image_size,
                             repeats=args.repeats)
    except (UnsupportedModelError, ValueError) as e:
        raise UsageError(str(e)) from None
    h, w = rows[0]["image_size"]
    print(f"model {args.model}, device {dev}, batch {args.batch_size}, image {h}x{w}, median of "
          f"{args.repeats} after 1 warm-up, {torch.get_num_threads()} threads")
    print(format_table(rows))
    return 0
