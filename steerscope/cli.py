"""The ``steerscope`` command line.

    steerscope sweep [--model ID [--remote | --dtype bfloat16 --device-map auto]] [--concept honesty|sentiment] [--layers all]
                     [--kinds resid,o,down] [--methods mean_diff,pca_diff] [--coeffs=-1,0,1] [--out DIR] [--resume] [--full]
    steerscope train [--model ID [--dtype bfloat16 --device-map auto]] [--concept honesty] [--layers 8:22:2] [--kinds o,down] [--rank 16]
                     [--steps 16] [--out DIR]
    steerscope figures --run runs/sweep --out figures/
    steerscope demo  [--model ID [--remote]] [--pairs 64] [--layers all] [--kinds resid]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_layers(text: str):
    if text == "all":
        return "all"
    layers: list[int] = []
    try:
        for part in text.split(","):
            if ":" in part:
                start, stop, *step = (int(x) for x in part.split(":"))
                layers.extend(range(start, stop, step[0] if step else 1))
            else:
                layers.append(int(part))
    except ValueError:
        raise ValueError(f"--layers {text!r}: use 'all', '3,5,7' or 'start:stop[:step]'.") from None
    return layers


def parse_floats(text: str, option: str) -> list[float]:
    try:
        return [float(c) for c in text.split(",")]
    except ValueError:
        raise ValueError(f"{option} {text!r}: give comma-separated numbers, e.g. {option}=-1,0,1.") from None


def add_model_options(parser: argparse.ArgumentParser, remote: bool) -> None:
    parser.add_argument("--model", default=None, help="HF id (cached) or local path; default: embedded SmolLM2-135M-Instruct")
    parser.add_argument("--dtype", default=None, help="parameter dtype, e.g. bfloat16 on a GPU (default float32)")
    parser.add_argument("--device-map", default=None, help="transformers device_map, e.g. 'auto' to spread over the GPUs")
    if remote:
        parser.add_argument("--remote", action="store_true",
                            help="run every trace on NDIF through nnsight (needs NDIF_API_KEY and a model NDIF serves)")


def load_from_args(args: argparse.Namespace):
    import probes

    return probes.load_model(args.model, dtype=args.dtype, device_map=args.device_map, remote=getattr(args, "remote", False))


def run_demo(args: argparse.Namespace) -> int:
    import pandas as pd

    import probes
    from analysis import separation

    started = time.time()
    model = load_from_args(args)
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


def run_sweep(args: argparse.Namespace) -> int:
    import analysis
    import probes

    from analysis.dose import check_coeffs

    started = time.time()
    coeffs = check_coeffs(parse_floats(args.coeffs, "--coeffs"))  # before the model loads: fail fast
    layers = parse_layers(args.layers)
    args.out = args.out or time.strftime("runs/sweep-%Y%m%d-%H%M%S")
    model = load_from_args(args)
    pairs = probes.concept_pairs(args.concept, n=args.pairs, tokenizer=model.tokenizer, chat=True, seed=args.seed)
    items = analysis.eval_items(args.concept)[: args.items]
    result = analysis.sweep_steerability(
        model, pairs, items, layers=layers, kinds=args.kinds.split(","),
        methods=args.methods.split(","), coeffs=coeffs, out=args.out,
        resume=args.resume, full=args.full, top_k=args.top_k, stride=args.stride, batch_size=args.batch_size,
        min_pmass=args.min_pmass, test_fraction=args.test_fraction, seed=args.seed, null_model=not args.no_null,
        null_direction=not args.no_null,
    )
    from analysis.report import SUMMARY_COLUMNS, markdown_table, ranked

    print(markdown_table(ranked(result.results).head(10), SUMMARY_COLUMNS))
    print(f"\nWrote {args.out}/summary.md, results.csv, report.html and figures/ in {time.time() - started:.0f} s.")
    errors = result.results["error"].notna() if "error" in result.results else None
    if errors is not None and len(errors) and errors.all():
        print(f"Every configuration failed (first error: {result.results['error'].iloc[0]}); see {args.out}/summary.md.",
              file=sys.stderr)
        return 1
    return 0


def default_adapter_layers(total: int) -> list[int]:
    """Every other layer of the middle half (SmolLM2's 30 layers: 8, 10, ..., 20)."""
    return list(range(total // 4 + 1, (3 * total) // 4 - 1, 2))


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    import analysis
    import probes
    import steering
    from analysis import compare, plots
    from analysis.report import latex_table

    started = time.time()
    out = Path(args.out or time.strftime("runs/train-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    model = load_from_args(args)
    total = probes.sublayers.n_layers(model)
    layers = parse_layers(args.layers) if args.layers else default_adapter_layers(total)
    pairs = probes.pairs_from_templates(**concept_templates(args.concept), tokenizer=model.tokenizer, chat=True, n=args.pairs, seed=args.seed)
    options = {"steps": args.steps, "lr": args.lr, "batch_pairs": args.batch_pairs, "seed": args.seed}
    adapter = steering.attach_innerpissa(model, layers, args.kinds.split(","), args.rank, seed=args.seed)
    print(adapter)
    result = steering.train_reprpo(model, adapter, pairs, **options)
    adapter.save(out / "adapter")
    result.history.to_csv(out / "history.csv", index=False)
    plots.save_figures({out / "training": plots.training_curves(result.history)}, ("html", "png"))
    print(f"trained in {result.seconds:.0f} s; separation along the frozen direction on the training pairs: {result.separation}"
          + ("; the sign was flipped (c=+1 separated the wrong way)" if result.sign_flipped else ""))
    if args.no_baselines:
        return 0
    items = analysis.dilemmas()[: args.items]
    table, runs = compare.compare_methods(model, pairs, items, layers, args.kinds.split(","), args.rank, adapter=adapter,
                                          adapter_seconds=result.seconds, train_options=options | {"progress": False},
                                          ablations=not args.no_ablations)
    table.to_csv(out / "methods.csv", index=False)
    (out / "methods.md").write_text("# Methods on held-out dilemmas\n\n" + compare.methods_markdown(table) + "\n")
    (out / "methods.tex").write_text(latex_table(table, caption="Honesty steering methods on held-out dilemmas."))
    (out / "generations.md").write_text(compare.generations_markdown(runs))
    (out / "doses").mkdir(exist_ok=True)
    for run in runs:
        run.dose.to_csv(out / "doses" / f"{run.name.replace(' ', '_').replace(':', '').replace('(', '').replace(')', '')}.csv", index=False)
    plots.save_figures({out / "pareto": compare.pareto_figure(table),
                        out / "dose_response": plots.dose_curves({run.name: run.dose for run in runs[:4]})}, ("html", "png", "svg"))
    print(compare.methods_markdown(table))
    print(f"\nWrote {out}/adapter, history.csv, methods.md, generations.md and figures in {time.time() - started:.0f} s.")
    return 0


def concept_templates(concept: str) -> dict:
    from probes.pairs import load_concept

    data = load_concept(concept)
    return {"persona_pairs": [tuple(p) for p in data["personas"]], "suffixes": data["suffixes"], "template": data["template"]}


def run_figures(args: argparse.Namespace) -> int:
    from analysis.figures import regenerate

    written = regenerate(args.run, args.out)
    print("\n".join(str(path) for path in written))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steerscope", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser("sweep", help="the layer-steerability sweep (the main job)")
    add_model_options(sweep, remote=True)
    sweep.add_argument("--layers", default="all", help="'all', '3,5,7' or 'start:stop[:step]'")
    sweep.add_argument("--kinds", default="resid,o,down", help="comma-separated sublayer kinds")
    sweep.add_argument("--methods", default="mean_diff,pca_diff", help="comma-separated direction methods (see steering.METHODS)")
    sweep.add_argument("--coeffs", default="-1,0,1", help="comma-separated steering coefficients; write --coeffs=-2,-1,0,1,2")
    sweep.add_argument("--min-pmass", type=float, default=0.1, help="items with P(yes)+P(no) below this are invalid")
    sweep.add_argument("--out", default=None, help="output folder (default: runs/sweep-<date-time>, so reruns never collide)")
    sweep.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    sweep.add_argument("--full", action="store_true", help="dose-response for every layer x kind (slow)")
    sweep.add_argument("--concept", default="honesty", choices=("honesty", "sentiment"),
                       help="the concept: its contrastive pairs make the directions, its readout items judge them")
    sweep.add_argument("--pairs", type=int, default=64, help="contrastive pairs for the directions")
    sweep.add_argument("--items", type=int, default=None, help="use only the first N evaluation items (default: all)")
    sweep.add_argument("--test-fraction", type=float, default=0.5, help="share of items held out as test items")
    sweep.add_argument("--no-null", action="store_true", help="skip the random-init model and random-direction nulls")
    sweep.add_argument("--top-k", type=int, default=4, help="most separable (layer, kind) to dose")
    sweep.add_argument("--stride", type=int, default=6, help="layer stride of the first kind's profile")
    sweep.add_argument("--batch-size", type=int, default=16)
    sweep.add_argument("--seed", type=int, default=0)
    sweep.set_defaults(handler=run_sweep)
    train = commands.add_parser("train", help="train InnerPiSSA with ReprPO and compare it with baselines")
    add_model_options(train, remote=False)
    train.add_argument("--concept", default="honesty", help="shipped concept for the training pairs (honesty, sentiment)")
    train.add_argument("--layers", default=None, help="adapted layers: '8:22:2', '10,12' (default: every other middle layer)")
    train.add_argument("--kinds", default="o,down", help="adapted sublayer kinds")
    train.add_argument("--rank", type=int, default=16)
    train.add_argument("--steps", type=int, default=16)
    train.add_argument("--lr", type=float, default=3e-3)
    train.add_argument("--batch-pairs", type=int, default=4)
    train.add_argument("--pairs", type=int, default=64)
    train.add_argument("--items", type=int, default=32, help="held-out dilemmas for the comparison (of the 64 shipped)")
    train.add_argument("--no-baselines", action="store_true", help="train and save only")
    train.add_argument("--no-ablations", action="store_true", help="skip the four adapter ablations")
    train.add_argument("--out", default=None, help="output folder (default: runs/train-<date-time>)")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(handler=run_train)
    figures = commands.add_parser("figures", help="regenerate a run's figures (PNG, SVG, HTML) and tables (markdown, LaTeX)")
    figures.add_argument("--run", required=True, help="a folder written by steerscope sweep or steerscope train")
    figures.add_argument("--out", default="figures")
    figures.set_defaults(handler=run_figures)
    demo = commands.add_parser("demo", help="collect honesty pairs and print a per-layer separation table")
    add_model_options(demo, remote=True)
    demo.add_argument("--pairs", type=int, default=64)
    demo.add_argument("--layers", default="all", help="'all', '3,5,7' or 'start:stop[:step]'")
    demo.add_argument("--kinds", default="resid", help="comma-separated sublayer kinds, e.g. resid,o,down")
    demo.add_argument("--batch-size", type=int, default=32)
    demo.set_defaults(handler=run_demo)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, FileExistsError, NotImplementedError, RuntimeError) as error:
        # bad input, a missing model or a clash with an earlier run: say what and how to fix it, no traceback
        # (STEERSCOPE_DEBUG=1 shows it)
        if os.environ.get("STEERSCOPE_DEBUG") or (isinstance(error, RuntimeError) and "another steerscope run" not in str(error)):
            raise
        parser.exit(2, f"steerscope {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
