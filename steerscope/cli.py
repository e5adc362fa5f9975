"""The ``steerscope`` command line.

    steerscope demo [--model ID] [--pairs 64] [--layers all] [--kinds resid]
"""

from __future__ import annotations

import argparse
import sys
import time


def parse_layers(text: str):
    if text == "all":
        return "all"
    layers: list[int] = []
    for part in text.split(","):
        if ":" in part:
            start, stop, *step = (int(x) for x in part.split(":"))
            layers.extend(range(start, stop, step[0] if step else 1))
        else:
            layers.append(int(part))
    return layers


def run_demo(args: argparse.Namespace) -> int:
    import pandas as pd

    import probes
    from analysis import separation

    started = time.time()
    model = probes.load_model(args.model)
    pairs = probes.honesty_pairs(n=args.pairs, tokenizer=model.tokenizer, chat=True)
    kinds = args.kinds.split(",")
    acts = probes.collect(model, pairs, layers=parse_layers(args.layers), sublayers=kinds, batch_size=args.batch_size)
    print(acts)
    table = separation(acts).round(3)
    with pd.option_context("display.max_rows", None, "display.width", 120):
        print("\nHonesty separation per layer (cross-validated over pairs, last token):")
        print(table.to_string(index=False))
    best = table.sort_values(["auroc", "cohens_d"], ascending=False).iloc[0]
    print(f"\nMost separable: layer {best.layer} {best.kind} (AUROC {best.auroc:.3f}, d {best.cohens_d:.2f}); "
          f"{time.time() - started:.0f} s in all.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steerscope", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="collect honesty pairs and print a per-layer separation table")
    demo.add_argument("--model", default=None, help="HF id (cached) or local path; default: embedded SmolLM2-135M-Instruct")
    demo.add_argument("--pairs", type=int, default=64)
    demo.add_argument("--layers", default="all", help="'all', '3,5,7' or 'start:stop[:step]'")
    demo.add_argument("--kinds", default="resid", help="comma-separated sublayer kinds, e.g. resid,o,down")
    demo.add_argument("--batch-size", type=int, default=32)
    demo.set_defaults(run=run_demo)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
