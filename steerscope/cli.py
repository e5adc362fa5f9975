"""The ``steerscope`` command line.

steerscope sweep [--model ID [--remote | --dtype bfloat16 --device-map auto]] [--concept honesty|sentiment] [--layers all]
                 [--kinds resid,o,down] [--methods mean_diff,pca_diff] [--coeffs=-1,0,1] [--out DIR] [--resume] [--full]
steerscope train [--model ID [--dtype bfloat16 --device-map auto]] [--concept honesty|sentiment] [--target VALUE] [--items PATH]
                 [--layers 8:22:2] [--kinds o,down] [--rank 16] [--steps 16] [--seeds 0,1,2] [--ablations] [--depths] [--out DIR]
steerscope paper [--run DIR | the train options]
steerscope figures --run runs/sweep --out figures/
steerscope demo  [--model ID [--remote]] [--pairs 64] [--layers all] [--kinds resid]
steerscope export SAVED --out DIR [--c 1.0] [--model ID]
steerscope serve (--plan DIR [--c 1.0] | --adapter DIR) [--model FOLDER] [--port N]
steerscope ndif up [--home DIR] [--device auto|cpu|gpu] [--api-port N]   |   steerscope ndif down [--home DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import ndif_local
from .cli_values import MIN_PMASS, at_least, fraction, not_negative, parse_floats, parse_ints, parse_layers, positive_number


def add_model_options(parser: argparse.ArgumentParser, remote: bool) -> None:
    parser.add_argument("--model", default=None, help="HF id (cached) or local path; default: embedded SmolLM2-135M-Instruct")
    parser.add_argument("--dtype", default=None, help="parameter dtype, e.g. bfloat16 on a GPU (default float32)")
    parser.add_argument("--device-map", default=None, help="transformers device_map, e.g. 'auto' to spread over the GPUs")
    if remote:
        parser.add_argument(
            "--remote", action="store_true", help="run every trace on NDIF through nnsight (needs NDIF_API_KEY and a model NDIF serves)"
        )


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
    print(
        f"\nMost separable: layer {best.layer} {best.kind} (AUROC {best.auroc:.3f}, d {best.cohens_d:.2f}); "
        f"{time.time() - started:.0f} s in all."
    )
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    import analysis
    import probes
    from analysis.measures.dose import check_coeffs

    started = time.time()
    coeffs = check_coeffs(parse_floats(args.coeffs, "--coeffs"))  # before the model loads: fail fast
    layers = parse_layers(args.layers)
    args.out = args.out or time.strftime("runs/sweep-%Y%m%d-%H%M%S")
    model = load_from_args(args)
    pairs = probes.concept_pairs(args.concept, n=args.pairs, tokenizer=model.tokenizer, chat=True, seed=args.seed)
    items = analysis.eval_items(args.concept)[: args.items]
    result = analysis.sweep_steerability(
        model,
        pairs,
        items,
        layers=layers,
        kinds=args.kinds.split(","),
        methods=args.methods.split(","),
        modes=args.modes.split(","),
        coeffs=coeffs,
        out=args.out,
        resume=args.resume,
        full=args.full or args.select == "all",
        top_k=args.top_k,
        stride=args.stride,
        batch_size=args.batch_size,
        min_pmass=args.min_pmass,
        test_fraction=args.test_fraction,
        seed=args.seed,
        null_model=not args.no_null,
        null_direction=not args.no_null,
        cost_budget=args.cost_budget or None,
    )
    from analysis.reports.sweep_report import SUMMARY_COLUMNS, ranked, write_report
    from analysis.reports.tables import markdown_table

    write_report(result)  # the study returns its result; its report is written here, as `paper` writes the experiment's
    print(markdown_table(ranked(result.results).head(10), SUMMARY_COLUMNS))
    print(f"\nWrote {args.out}/summary.md, results.csv, report.html and figures/ in {time.time() - started:.0f} s.")
    errors = result.results["error"].notna() if "error" in result.results else None
    if errors is not None and len(errors) and errors.all():
        print(f"Every configuration failed (first error: {result.results['error'].iloc[0]}); see {args.out}/summary.md.", file=sys.stderr)
        return 1
    return 0


def experiment_items(args: argparse.Namespace):
    """The items the experiment judges: --items (steerscope's item JSONL, labelled for the target by their
    sign where unlabelled, or a DailyDilemmas copy), else the concept's shipped items."""
    import analysis
    from analysis.readouts.items import is_readout_file

    if args.items and is_readout_file(args.items):
        return analysis.labelled_for(analysis.load_items(args.items), args.target)
    if args.items:
        return analysis.load_daily_dilemmas(args.items, value=args.target)
    if args.target == args.concept:
        return analysis.concept_items(args.concept)
    return analysis.moral_dilemmas(args.target)


def run_experiment_command(args: argparse.Namespace, full: bool) -> int:
    import analysis
    import probes
    from analysis.studies.experiment import ExperimentSettings, run_experiment

    started = time.time()
    args.target = args.target or args.concept
    seeds = parse_ints(args.seeds, "--seeds")
    out = args.out or time.strftime(f"runs/{'paper' if full else 'train'}-%Y%m%d-%H%M%S")
    items = experiment_items(args)
    model = load_from_args(args)
    pairs = probes.concept_pairs(args.concept, n=args.pairs, tokenizer=model.tokenizer, chat=True, seed=args.seed)
    settings = ExperimentSettings(
        target=args.target,
        concept=args.concept,
        layers=parse_layers(args.layers) if args.layers else None,
        kinds=args.kinds.split(","),
        rank=args.rank,
        seeds=seeds,
        steps=args.steps,
        lr=args.lr,
        objective=args.objective,
        batch_pairs=args.batch_pairs,
        val_fraction=args.val_fraction,
        patience=args.patience,
        lora=not args.no_lora,
        ablations=full or args.ablations,
        depths=full or args.depths,
        split_seed=args.seed,
        min_pmass=args.min_pmass,
        cost_budget=args.cost_budget or None,
    )
    run_experiment(model, pairs, items, settings, out=out, resume=args.resume)
    analysis.paper.write_paper(out)
    print((Path(out) / "table1.md").read_text())
    print(
        f"Wrote {out}/table1.md, table2.md, transfer.md, figure1_dose, figure2_depth, pareto and generations.md "
        f"in {time.time() - started:.0f} s."
    )
    return report_missing(Path(out))


def report_missing(run: Path) -> int:
    """Say on stderr what the tables lack; 1 when no run finished."""
    import analysis

    missing = analysis.paper.missing_runs(run)
    for line in missing:
        print(line, file=sys.stderr)
    return 1 if missing and missing[0].startswith("No run finished") else 0


def run_train(args: argparse.Namespace) -> int:
    return run_experiment_command(args, full=False)


def run_paper(args: argparse.Namespace) -> int:
    if args.run:
        import analysis

        written = analysis.paper.write_paper(args.run, args.out or args.run)
        print("\n".join(str(path) for path in written))
        return report_missing(Path(args.run))
    return run_experiment_command(args, full=True)


def add_experiment_options(parser: argparse.ArgumentParser, full: bool) -> None:
    add_model_options(parser, remote=False)
    parser.add_argument(
        "--concept",
        default="honesty",
        help="shipped concept whose pairs train the adapters and whose personas prompt: honesty, or sentiment (the positive control)",
    )
    parser.add_argument(
        "--target", default=None, help="the value whose change is the effect (others are side effects); default: the concept"
    )
    parser.add_argument(
        "--items",
        default=None,
        help="steerscope item JSONL (readouts labelled for the target by their sign) or a local DailyDilemmas copy "
        "(CSV/JSONL/Parquet, either schema); default: the concept's shipped items",
    )
    parser.add_argument("--layers", default=None, help="adapted layers: '8:22:2', '10,12' (default: every other middle layer)")
    parser.add_argument("--kinds", default="o,down", help="adapted sublayer kinds")
    parser.add_argument("--rank", type=at_least(1, "the adapters' rank"), default=16)
    parser.add_argument("--steps", type=at_least(1, "training steps"), default=16)
    parser.add_argument("--lr", type=positive_number("the learning rate"), default=3e-3)
    parser.add_argument(
        "--objective",
        choices=("shift", "gap", "both"),  # steering.adapters.reprpo.OBJECTIVES (not imported: the CLI parses before torch loads)
        default="shift",
        help="what ReprPO pushes along its frozen direction: the pair midpoint (a shift of every state, what moves "
        "persona-free text; default), the positive-negative gap (before 2026-11-30) or both",
    )
    parser.add_argument("--batch-pairs", type=at_least(1, "pairs per training step"), default=4)
    parser.add_argument(
        "--val-fraction",
        type=fraction(True, "the share of training pairs held out to choose the training budget"),
        default=0.25,
        help="training pairs held out; the adapter's best validation step is kept (0: none)",
    )
    parser.add_argument("--patience", type=at_least(1, "steps without a better validation loss"), default=None)
    parser.add_argument("--pairs", type=at_least(2, "contrastive pairs for training and the baselines"), default=64)
    parser.add_argument("--min-pmass", type=MIN_PMASS, default=0.1, help="items with P(yes)+P(no) below this are invalid")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds of every trainable method (at least 3 for spread)")
    parser.add_argument("--no-lora", action="store_true", help="skip the LoRA baseline")
    parser.add_argument(
        "--cost-budget",
        type=not_negative("the KL budget (nats per token of neutral text; 0: off)"),
        default=0.05,
        help="Table 1 compares every main method at the coefficient where its mean KL on neutral text reaches this many "
        "nats per token (0: per unit c only)",
    )
    if not full:
        parser.add_argument("--ablations", action="store_true", help="also train the Table 2 ablations")
        parser.add_argument("--depths", action="store_true", help="also train single-layer adapters by depth (Figure 2)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pair sample and of the validation/test split")


def run_figures(args: argparse.Namespace) -> int:
    from analysis.reports.regenerate import regenerate

    written = regenerate(args.run, args.out)
    print("\n".join(str(path) for path in written))
    return 0


def run_export(args: argparse.Namespace) -> int:
    """A saved plan or adapter, in the form `steerscope serve` serves: a plan's folder (checked servable), a PEFT LoRA folder."""
    from steering import serve
    from steering.steerable import saved_type

    saved = Path(args.saved)
    kind = saved_type(saved)
    if kind == "steering":
        plan = serve.check_servable(saved)  # refuses what vLLM cannot apply, before anything is written
        plan.save(args.out)
        print(f"Wrote the plan {plan.name!r} to {args.out}; serve it with: steerscope serve --plan {args.out} --c {args.c:g}")
        return 0
    if kind not in ("innerpissa", "lora"):
        raise ValueError(f"{saved} holds a {kind!r}, which is not served: export a steering plan or an adapter (InnerPiSSA, LoRA).")
    import steering

    model = load_from_args(args)
    adapter = steering.load_steerable(saved, model)
    assert isinstance(adapter, steering.AdapterHandle)
    steering.export_peft(adapter, args.out, c=args.c)
    print(f"Wrote {saved} at c = {args.c:g} as a PEFT LoRA folder {args.out}; serve it with: steerscope serve --adapter {args.out}")
    return 0


def run_ndif(args: argparse.Namespace) -> int:
    """Start or stop a local NDIF (`steerscope.ndif_local`): NDIF's own server on loopback ports, stopped by process id."""
    if args.action == "down":
        stopped = ndif_local.down(args.home)
        print(f"Stopped the local NDIF in {args.home} ({len(stopped)} processes, by their ids).")
        return 0
    started = time.monotonic()
    try:
        server = ndif_local.up(
            args.home, device=args.device, api_port=args.api_port, dtype=args.dtype, pubsub_limit=args.redis_pubsub_limit
        )
    except ndif_local.StartError as error:  # what failed and its log; everything started was stopped
        print(f"steerscope ndif up: error: {error}", file=sys.stderr)
        return 1
    print(
        f"NDIF is up at {server.api_url} after {time.monotonic() - started:.0f} s ({server.device} model actors; state and logs in {server.home})."
    )
    print(f"Send nnsight's remote traces there:  export NDIF_HOST={server.api_url}   (a local NDIF checks no API key)")
    print("A model is named by its local folder: probes.load_model('/path/to/model', remote=True); NDIF deploys it on the first trace.")
    print(f"Stop it:  steerscope ndif down --home {server.home}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """vLLM's OpenAI-compatible server on 127.0.0.1 (`steering.serve`), run by the serving environment's python."""
    from probes.models import embedded_model_dir
    from steering import serve

    if args.plan:
        args.c = 1.0 if args.c is None else args.c
        serve.served_steps(args.plan, args.c)  # refuse an unservable plan here, before vLLM starts
    else:
        if args.c is not None:
            raise ValueError("--c is a plan's coefficient; an adapter's was fixed when it was exported (steerscope export --c).")
        serve.lora_rank(args.adapter)
    model = serve.model_folder(args.model or embedded_model_dir())  # converted here, where the converter is installed
    forwarded = ["--plan", str(Path(args.plan).resolve())] if args.plan else ["--adapter", str(Path(args.adapter).resolve())]
    forwarded += ["--model", model] + (["--c", repr(args.c)] if args.plan else []) + (["--port", str(args.port)] if args.port else [])
    if serve.vllm_importable():
        return serve.main(forwarded)
    python = serve.serve_python()
    if not python.exists():
        raise FileNotFoundError(f"No serving environment ({python}): run `{serve.SETUP}` (or set STEERSCOPE_SERVE_PYTHON).")
    os.execv(python, [str(python), "-m", "steering.serve", *forwarded])  # Ctrl-C then reaches the server's own handler
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steerscope", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser("sweep", help="the layer-steerability sweep (the main job)")
    add_model_options(sweep, remote=True)
    sweep.add_argument("--layers", default="all", help="'all', '3,5,7' or 'start:stop[:step]'")
    sweep.add_argument("--kinds", default="resid,o,down", help="comma-separated sublayer kinds")
    sweep.add_argument("--methods", default="mean_diff,pca_diff", help="comma-separated direction methods (see steering.METHODS)")
    sweep.add_argument("--modes", default="add", help="how directions are applied: add,ablate,clamp,conditional (see steering.modes)")
    sweep.add_argument("--coeffs", default="-1,0,1", help="comma-separated steering coefficients; write --coeffs=-2,-1,0,1,2")
    sweep.add_argument("--min-pmass", type=MIN_PMASS, default=0.1, help="items with P(yes)+P(no) below this are invalid")
    sweep.add_argument("--out", default=None, help="output folder (default: runs/sweep-<date-time>, so reruns never collide)")
    sweep.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    sweep.add_argument(
        "--cost-budget",
        type=not_negative("the KL budget (nats per token of neutral text; 0: off)"),
        default=0.0,
        help="also judge every dosed direction at the coefficient where its mean KL on neutral text reaches this many nats "
        "per token, so methods compare at one cost (0, the default: per unit c only; calibrating took 81 s for one SmolLM2 direction on 2 busy CPU cores)",
    )
    sweep.add_argument("--full", action="store_true", help="dose-response for every layer x kind (slow; same as --select all)")
    sweep.add_argument(
        "--select",
        choices=("predicted", "all"),
        default="predicted",
        help="which (layer, kind) to dose: the largest first-order effects on validation items (+ a layer profile), or all",
    )
    sweep.add_argument(
        "--concept",
        default="honesty",
        choices=("honesty", "sentiment"),
        help="the concept: its contrastive pairs make the directions, its readout items judge them",
    )
    sweep.add_argument("--pairs", type=at_least(2, "contrastive pairs"), default=64, help="contrastive pairs for the directions")
    sweep.add_argument(
        "--items", type=at_least(2, "evaluation items"), default=None, help="use only the first N evaluation items (default: all)"
    )
    sweep.add_argument(
        "--test-fraction", type=fraction(False, "the share of items held out"), default=0.5, help="share of items held out as test items"
    )
    sweep.add_argument("--no-null", action="store_true", help="skip the random-init model and random-direction nulls")
    sweep.add_argument(
        "--top-k", type=at_least(1, "how many (layer, kind) to dose"), default=4, help="most separable (layer, kind) to dose"
    )
    sweep.add_argument(
        "--stride", type=at_least(1, "the layer stride of the profile"), default=6, help="layer stride of the first kind's profile"
    )
    sweep.add_argument("--batch-size", type=at_least(1, "texts per forward pass"), default=16)
    sweep.add_argument("--seed", type=int, default=0)
    sweep.set_defaults(handler=run_sweep)
    train = commands.add_parser("train", help="InnerPiSSA vs prompting, PCA, S-space, random and LoRA on held-out dilemmas (Table 1)")
    add_experiment_options(train, full=False)
    train.add_argument("--out", default=None, help="output folder (default: runs/train-<date-time>)")
    train.set_defaults(handler=run_train)
    paper = commands.add_parser(
        "paper",
        help="the paper's tables and figures: --run DIR rebuilds them from a train/paper "
        "folder; without --run, runs everything (Table 1, Table 2 ablations, Figure 2 depths) first",
    )
    add_experiment_options(paper, full=True)
    paper.add_argument("--run", default=None, help="a folder written by steerscope train or paper")
    paper.add_argument("--out", default=None, help="output folder (default: runs/paper-<date-time>, or --run itself)")
    paper.set_defaults(handler=run_paper)
    figures = commands.add_parser("figures", help="regenerate a run's figures (PNG, SVG, HTML) and tables (markdown, LaTeX)")
    figures.add_argument("--run", required=True, help="a folder written by steerscope sweep or steerscope train")
    figures.add_argument("--out", default="figures")
    figures.set_defaults(handler=run_figures)
    demo = commands.add_parser("demo", help="collect honesty pairs and print a per-layer separation table")
    add_model_options(demo, remote=True)
    demo.add_argument("--pairs", type=at_least(2, "contrastive pairs"), default=64)
    demo.add_argument("--layers", default="all", help="'all', '3,5,7' or 'start:stop[:step]'")
    demo.add_argument("--kinds", default="resid", help="comma-separated sublayer kinds, e.g. resid,o,down")
    demo.add_argument("--batch-size", type=at_least(1, "texts per forward pass"), default=32)
    demo.set_defaults(handler=run_demo)
    export = commands.add_parser(
        "export", help="write a saved plan or adapter in the form `steerscope serve` serves (PEFT LoRA for adapters)"
    )
    export.add_argument("saved", help="a folder Steerable.save or steering.save_pretrained wrote: a plan, an InnerPiSSA or a LoRA")
    export.add_argument("--out", required=True, help="the folder to write")
    export.add_argument("--c", type=float, default=1.0, help="the coefficient an adapter is fixed at (a plan's is chosen when served)")
    add_model_options(export, remote=False)
    export.set_defaults(handler=run_export)
    serve = commands.add_parser(
        "serve", help="vLLM's OpenAI-compatible server on 127.0.0.1 with a plan or an adapter (bash scripts/setup_serve.sh)"
    )
    served = serve.add_mutually_exclusive_group(required=True)
    served.add_argument("--plan", help="a steering plan's folder (steerscope export, steering.save_pretrained)")
    served.add_argument("--adapter", help="a PEFT LoRA folder (steerscope export, steering.export_peft)")
    serve.add_argument("--model", default=None, help="the model's local Hugging Face-format folder (default: the embedded SmolLM2)")
    serve.add_argument("--c", type=float, default=None, help="the plan's coefficient (default 1; an adapter's was fixed by export)")
    serve.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    serve.set_defaults(handler=run_serve)
    ndif = commands.add_parser("ndif", help="start or stop a local NDIF server on 127.0.0.1 (bash scripts/setup_ndif.sh)")
    ndif.add_argument("action", choices=("up", "down"))
    ndif.add_argument("--home", default=str(ndif_local.DEFAULT_HOME), help="its state, logs and Ray files (one NDIF per folder)")
    ndif.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="model actors on the GPU (NDIF's own) or the CPU; auto: gpu when one is seen",
    )
    ndif.add_argument("--api-port", type=int, default=None, help="the API's port on 127.0.0.1 (default: a free one)")
    ndif.add_argument("--dtype", default="float32", help="the dtype NDIF loads models in (float32: results equal local float32 runs)")
    ndif.add_argument(
        "--redis-pubsub-limit",
        default=ndif_local.DEFAULT_PUBSUB_LIMIT,
        help="Redis's pubsub buffer limit 'hard soft seconds'; results over min(soft, hard/2) go through the object store",
    )
    ndif.set_defaults(handler=run_ndif)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, FileExistsError, NotImplementedError, RuntimeError, ImportError) as error:
        # bad input, a missing model or optional package, or a clash with an earlier run: say what and how to
        # fix it, no traceback (STEERSCOPE_DEBUG=1 shows it)
        unexpected = (isinstance(error, RuntimeError) and "another steerscope run" not in str(error)) or (
            isinstance(error, ImportError) and "pip install" not in str(error)
        )
        if os.environ.get("STEERSCOPE_DEBUG") or unexpected:
            raise
        parser.exit(2, f"steerscope {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
