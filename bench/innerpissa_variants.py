"""Why InnerPiSSA buys less effect per unit of KL than LoRA or a mean difference: one training choice changed
at a time, each adapter judged at the same cost.

Every variant trains on the sentiment control (64 chat pairs, a quarter held out for the validation budget,
adapters at the experiment's default layers x ``o,down``, rank 16, 16 steps, seed 0), then is judged on the
*validation* readouts (the test half stays untouched, as for any choice of defaults) at the coefficient c* where
its mean per-token KL on neutral text reaches 0.05 nats (`analysis.measures.matched_cost`, the same code as
Table 1). One JSON line per variant is appended to OUT as it finishes, so a killed run keeps what finished and
a rerun skips it.

    .venv/bin/python bench/innerpissa_variants.py runs/innerpissa-variants.jsonl            # every variant
    .venv/bin/python bench/innerpissa_variants.py runs/innerpissa-variants.jsonl gap shift  # some of them

3–5 min per InnerPiSSA variant on one core of a 2-core CPU with the other busy (LoRA about 6).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import analysis
import probes
import steering
from analysis.measures.evaluate import evaluate
from analysis.readouts.split import split_items
from analysis.studies.experiment import default_adapter_layers, held_out_pairs
from probes import sublayers as sl
from steering.adapters.reprpo import default_loss_layer

# name: (adapter options, None for a PEFT LoRA; ReprPO overrides)
VARIANTS: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]] = {
    "gap": ({}, {"objective": "gap"}),
    "gap, lr 1e-2": ({}, {"objective": "gap", "lr": 1e-2}),
    "shift": ({}, {"objective": "shift"}),
    "gap + shift": ({}, {"objective": "both"}),
    "shift, lr 1e-2": ({}, {"objective": "shift", "lr": 1e-2}),
    "shift, coherence 0": ({}, {"objective": "shift", "coherence_weight": 0.0}),
    "shift, loss layer 20": ({}, {"objective": "shift", "loss_layers": [20]}),
    "shift, max_angle 0.6": ({"max_angle": 0.6}, {"objective": "shift"}),
    "LoRA, shift": (None, {"objective": "shift"}),
}
BUDGET = 0.05
RECORDED = ("effect", "kl_at_1", "coeff_at_budget", "kl_at_budget", "effect_at_budget", "effect_at_budget_lo", "effect_at_budget_hi")
RECORDED += ("p_at_budget", "delta_nll")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="JSON lines, appended as each variant finishes")
    parser.add_argument("variants", nargs="*", default=list(VARIANTS), help=f"some of: {', '.join(VARIANTS)}")
    args = parser.parse_args()
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    done = {json.loads(line)["variant"] for line in args.out.read_text().splitlines()} if args.out.exists() else set()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    model = probes.load_model()
    pairs = probes.concept_pairs("sentiment", n=64, tokenizer=model.tokenizer, chat=True, seed=0)
    validation = split_items(analysis.concept_items("sentiment"), 0.5, 0).validation
    train_pairs, val_pairs = held_out_pairs(pairs, 0.25, 0)
    layers = default_adapter_layers(sl.n_layers(model))
    loss_layer = max(default_loss_layer(sl.n_layers(model)), *layers)
    for name in args.variants:
        if name in done:
            continue
        options, overrides = VARIANTS[name]
        started = time.time()
        if options is None:
            handle = steering.attach_lora(model, layers, ("o", "down"), 16, seed=0)
        else:
            handle = steering.attach_innerpissa(model, layers, ("o", "down"), 16, seed=0, **options)
        training = {"steps": 16, "lr": 3e-3, "batch_pairs": 4, "progress": False, "seed": 0, "loss_layers": [loss_layer]}
        result = steering.train_reprpo(model, handle, train_pairs, val_pairs=val_pairs, **(training | overrides))
        trained = time.time()
        run = evaluate(model, name, handle, validation, target="sentiment", seed=0, cost_budget=BUDGET, max_coeff=64.0)
        handle.detach()
        summary = result.summary()
        row = {
            "variant": name,
            "train_s": round(trained - started, 1),
            "judge_s": round(time.time() - trained, 1),
            **{key: summary.get(key) for key in ("steps_run", "best_step", "train_loss", "val_loss", "weight_change")},
            **{key: run.metrics.get(key) for key in RECORDED},
        }
        with args.out.open("a") as file:
            file.write(json.dumps(row) + "\n")
        print(
            f"{name}: effect at KL {BUDGET} = {row['effect_at_budget']:.2f} [{row['effect_at_budget_lo']:.2f}, "
            f"{row['effect_at_budget_hi']:.2f}] (c* {row['coeff_at_budget']:.2f}), per unit c {row['effect']:.2f}, "
            f"{row['train_s']:.0f} s training",
            flush=True,
        )


if __name__ == "__main__":
    main()
