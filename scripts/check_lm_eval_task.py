"""Outside CI: lm-eval-harness's own evaluator runs an exported plan on a small local task, offline, and
its per-choice log-likelihoods equal steerscope's under `steering.applied` (computed here by hand).

tests/test_formats.py checks lm_eval's `SteeredModel.loglikelihood` in CI; a whole `simple_evaluate`
also needs lm_eval's task dependencies (datasets, evaluate, pyarrow, ...: 37 packages, 250 MB), which
the lock leaves out. Install them beside the environment and run from the repository root:

    .venv/bin/python -m pip install --no-deps --target /tmp/lm-eval-deps \\
        $(.venv/bin/python -m pip install --dry-run -c requirements.lock lm_eval==0.4.13 2>/dev/null \\
          | sed -n 's/^Would install //p' | tr ' ' '\\n' | sed -E 's/-([0-9][^-]*)$/==\\1/' | grep -v '^lm_eval==')
    PYTHONPATH=/tmp/lm-eval-deps .venv/bin/python scripts/check_lm_eval_task.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lm_eval
import numpy as np
import torch
from lm_eval.tasks import TaskManager

import steering
from probes import sublayers as sl
from steering.directions.direction import Direction
from tests.tiny import saved_folder, tiny_model

DOCS = [
    {"question": "Is it good? Yes or No:", "choices": ["Yes", "No"], "label": 0},
    {"question": "The quick brown", "choices": ["fox", "dog", "cat"], "label": 0},
    {"question": "Is the food good or bad? It is", "choices": ["good", "bad"], "label": 1},
]
TASK = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
"""
COEFF = 2.5


def direction(layer: int, seed: int, scale: float = 1.5, kind: str = "resid") -> Direction:
    vector = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(seed)), dim=0)
    return Direction(vector, scale, layer, kind, f"test{seed}")


def by_hand(model, plan, context: str, continuation: str) -> float:
    ids = model.tokenizer(context, add_special_tokens=False)["input_ids"]
    cont = model.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad(), steering.applied(model, plan, COEFF):
        logits = sl.unwrap(model)(torch.tensor([ids + cont])).logits[0].float()
    logprobs = torch.log_softmax(logits[len(ids) - 1 : -1], dim=-1)
    return float(logprobs[torch.arange(len(cont)), torch.tensor(cont)].sum())


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="lm-eval-check-"))
    with open(out / "data.jsonl", "w") as f:
        f.writelines(json.dumps(doc) + "\n" for doc in DOCS)
    (out / "tiny_mc.yaml").write_text(TASK.format(data=out / "data.jsonl"))
    for family in ("llama", "gpt2"):
        model = tiny_model(family)
        other = "down" if family == "llama" else "mlp"
        plan = steering.Steering([direction(1, 0), direction(1, 1, 0.7), direction(0, 2, 2.0, other)], weights=[1.0, -0.5, 1.0])
        path = steering.export_lm_eval(plan, out / f"{family}.steer.pt", model=model, coeff=COEFF)
        result = lm_eval.simple_evaluate(
            model="steered",
            model_args={"pretrained": saved_folder(model, out / family), "steer_path": str(path), "dtype": "float32"},
            tasks=["tiny_mc"],
            task_manager=TaskManager(include_path=str(out)),
            device="cpu",
            batch_size=2,
            log_samples=True,
        )
        got, want = [], []
        for sample in result["samples"]["tiny_mc"]:
            for choice, response in zip(sample["doc"]["choices"], sample["resps"]):
                got.append(float(response[0][0]))
                want.append(by_hand(model, plan, sample["doc"]["question"], " " + choice))
        print(f"{family}: {len(got)} choices, max |Δ log-likelihood| = {max(abs(a - b) for a, b in zip(got, want)):.2e}")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    print("OK: lm_eval's steered model scores as steerscope does")


if __name__ == "__main__":
    main()
