"""``xvit bench``: time and peak memory of methods against plain passes measured in the same rounds."""

from __future__ import annotations

import argparse
import itertools
import os
import sys

from xvit.adapters import UnsupportedModelError
from xvit.cli.common import (
    MAIN_METHODS,
    UsageError,
    add_param_argument,
    check_method_params,
    check_methods,
    device,
    load_model,
    non_negative_int,
    parse_params,
    positive_int,
)

LARGE_BATCH_MAX_SIZE = 224  # batches above 8 run only at this input size or below (the grid stays within memory)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Time per image and peak memory of each method and their ratios to a plain forward, "
                          "forward+input-gradient and forward+backward pass of the same model, measured in "
                          "interleaved rounds in one process (medians of per-round ratios). Every combination of "
                          "--model, --image-size and --batch-size runs, except batches above 8 at inputs larger "
                          f"than {LARGE_BATCH_MAX_SIZE} px. CPU memory is the peak RSS increase sampled from "
                          "/proc/self/statm; CUDA memory is torch.cuda.max_memory_allocated. Methods that count "
                          "their passes (mask methods, BT, TAM) are also timed against that many plain passes "
                          "('× nominal'), with clustering and eigen-solves reported separately.")
    parser.add_argument("--model", "--models", dest="models", nargs="+", default=["xvit-random:tiny"], metavar="SPEC",
                        help="model specs, e.g. timm-random:vit_small_patch16_224 (default: xvit-random:tiny)")
    parser.add_argument("--method", "--methods", dest="methods", nargs="+", metavar="M", default=MAIN_METHODS,
                        help="methods to time (default: the main methods)")
    parser.add_argument("--batch-size", "--batch-sizes", dest="batch_sizes", type=positive_int, nargs="+",
                        default=[8], help="images per call (default: 8)")
    parser.add_argument("--image-size", "--image-sizes", dest="image_sizes", type=positive_int, nargs="+",
                        default=None, help="input sides in pixels (default: the model's input size)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed rounds (default: 5)")
    parser.add_argument("--warmup", type=non_negative_int, default=1,
                        help="untimed rounds before the timed ones (default: 1; every method's first call, which "
                             "reads the passes it records, already runs before them)")
    parser.add_argument("--compare", choices=("captum", "gradcam"), default=None,
                        help="also time the peer library's equivalent calls (pip install 'xvit[bench]') and report "
                             "the correlation of their maps with xvit's")
    parser.add_argument("--device", default="cpu", help="device to run on (default: cpu)")
    parser.add_argument("--analyses", action="store_true",
                        help="time the patch-interaction analyses (interactions, coverage, erf, patch_removal) "
                             "against the plain passes they need instead of the methods")
    parser.add_argument("--probes", type=positive_int, default=8,
                        help="--analyses: random probes R of the jacobian indicator (default: 8)")
    add_param_argument(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from xvit.bench import format_analysis_table, format_table, run_analysis_benchmark, run_benchmark

    methods = check_methods(args.methods)
    params = parse_params(args.param)
    check_method_params(params, methods)
    if args.compare is not None:
        module = {"captum": "captum", "gradcam": "pytorch_grad_cam"}[args.compare]
        try:
            __import__(module)
        except ImportError:
            raise UsageError(f"--compare {args.compare} needs {module}: pip install 'xvit[bench]'") from None
    dev = device(args.device)
    models = {(spec, size): load_model(spec, size) for spec, size in itertools.product(args.models,
                                                                                        args.image_sizes or [None])}
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > cpus:
        print(f"note: load average {load:.1f} on {cpus} CPUs; other processes compete with the benchmark, "
              "so timings are noisy (ratios from interleaved rounds are less affected)", file=sys.stderr)
    for (spec, size), model in models.items():
        model = model.to(dev)
        for batch in args.batch_sizes:
            if batch > 8 and size is not None and size > LARGE_BATCH_MAX_SIZE:
                print(f"skipped: {spec}, batch {batch}, image {size} (batches above 8 only up to "
                      f"{LARGE_BATCH_MAX_SIZE} px)\n")
                continue
            if args.analyses:
                try:
                    rows = run_analysis_benchmark(model, batch_size=batch, image_size=size, repeats=args.repeats,
                                                  warmup=args.warmup, probes=args.probes)
                except (UnsupportedModelError, ValueError) as e:
                    raise UsageError(str(e)) from None
                h, w = rows[0]["image_size"]
                print(f"model {spec}, device {dev}, batch {batch}, image {h}x{w}, {rows[0]['patches']} patches, "
                      f"median of {args.repeats} interleaved rounds after {args.warmup} warm-up, "
                      f"{torch.get_num_threads()} threads")
                print(format_analysis_table(rows))
                print(flush=True)
                continue
            try:
                rows = run_benchmark(model, methods, batch_size=batch, image_size=size, repeats=args.repeats,
                                     warmup=args.warmup, compare=args.compare, params=params)
            except (UnsupportedModelError, ValueError) as e:
                raise UsageError(str(e)) from None
            h, w = rows[0]["image_size"]
            print(f"model {spec}, device {dev}, batch {batch}, image {h}x{w}, median of {args.repeats} interleaved "
                  f"rounds after {args.warmup} warm-up, {torch.get_num_threads()} threads")
            print(format_table(rows))
            print(flush=True)
    return 0
