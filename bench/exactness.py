"""Does batching change a story? Each prompt generated alone, in one static batch with the others,
and in the continuous batch (joining while the others are written), compared.

The service promises that a seed and settings give the same story batched or alone. On the tests'
tiny model that holds bit for bit; on real models a batch runs different matrix-multiply kernels
(and left padding shifts the work), so the logits differ in their last bits, and a token can flip
only where two candidates are within that difference. This prints, per model and strategy, how
many of the benchmark's prompts came out identical and the largest logit difference of the first
step, and writes bench/results/exactness.json.

    python -m bench --only exactness
"""

from __future__ import annotations

import argparse
import threading
import time

import torch

from bench.common import (
    PROMPTS,
    add_precision_option,
    bench_models,
    load_bench_model,
    print_table,
    service_config,
    set_threads,
    write_json,
)
from core.settings import DecodingSettings
from model.engine import ContinuousBatch
from model.generation import RowJob, generate_batch
from model.loading import LoadedModel

STRATEGIES: dict[str, DecodingSettings] = {
    "greedy": DecodingSettings(strategy="greedy", repetition_penalty=1.0),
    "bot defaults (sampling)": service_config().defaults,
    "beam 4": DecodingSettings(strategy="beam", num_beams=4, repetition_penalty=1.0),
}


def first_step_logit_gap(loaded: LoadedModel) -> float:
    """Largest |logit alone − logit in the batch| at the first generated position, over the prompts."""
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    batch = tokenizer(list(PROMPTS), return_tensors="pt", padding=True).to(loaded.device)
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # as `generate` numbers left-padded rows
    with torch.inference_mode():
        together = loaded.model(**batch, position_ids=positions).logits[:, -1].float()
        gap = 0.0
        for index, prompt in enumerate(PROMPTS):
            alone = loaded.model(**tokenizer(prompt, return_tensors="pt").to(loaded.device)).logits[0, -1].float()
            gap = max(gap, (alone - together[index]).abs().max().item())
    return gap


def compare(loaded: LoadedModel, settings: DecodingSettings, new_tokens: int) -> dict:
    settings = settings.replace(max_new_tokens=new_tokens)
    jobs = [RowJob(prompt, settings, seed=100 + i) for i, prompt in enumerate(PROMPTS)]
    alone = [generate_batch(loaded, [job])[0].continuation for job in jobs]
    batched = [row.continuation for row in generate_batch(loaded, jobs)]
    result = {"identical": _same(alone, batched), "prompts": len(jobs)}
    if settings.strategy != "beam":  # beam search keeps the static batch
        result["identical_continuous"] = _same(alone, continuous(loaded, jobs))
    return result


def continuous(loaded: LoadedModel, jobs: list[RowJob]) -> list[str]:
    """The stories through the continuous batch: half prefilled together, the rest joining one by one
    while the others are being written (every few steps)."""
    done: dict[int, str] = {}
    rows = [
        RowJob(j.prompt, j.settings, j.seed, on_done=lambda out, i=i: done.__setitem__(i, out.continuation))
        for i, j in enumerate(jobs)
    ]
    engine = ContinuousBatch(loaded, on_error=lambda job, exc: None)
    engine.start(rows[: len(rows) // 2])
    worker = threading.Thread(target=engine.run)
    worker.start()
    for index, row in enumerate(rows[len(rows) // 2 :]):
        while engine.stats.steps < 3 * (index + 1) and worker.is_alive():
            time.sleep(0.001)
        if not engine.submit(row):
            engine.start([row])
            worker.join()
            worker = threading.Thread(target=engine.run)
            worker.start()
    worker.join()
    return [done.get(i, "") for i in range(len(rows))]


def _same(first: list[str], second: list[str]) -> int:
    return sum(a == b for a, b in zip(first, second, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 new tokens instead of 100")
    add_precision_option(parser)
    args = parser.parse_args(argv)
    set_threads(service_config().model.cpu_threads)
    new_tokens = 8 if args.quick else 100
    rows = []
    for bench_model in bench_models(args.precision):
        loaded = load_bench_model(bench_model)
        gap = first_step_logit_gap(loaded)
        for name, settings in STRATEGIES.items():
            result = compare(loaded, settings, new_tokens)
            rows.append({"model": bench_model.name, "strategy": name, **result, "first_step_logit_gap": gap})
    headers = ["model", "strategy", "identical: static batch", "identical: continuous batch", "first-step logit gap"]
    print_table(
        "Batched vs alone: identical stories",
        headers,
        [
            [
                r["model"],
                r["strategy"],
                f"{r['identical']}/{r['prompts']}",
                f"{r['identical_continuous']}/{r['prompts']}" if "identical_continuous" in r else "— (static)",
                f"{r['first_step_logit_gap']:.2e}",
            ]
            for r in rows
        ],
    )
    write_json("exactness", {"new_tokens": new_tokens, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
