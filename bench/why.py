"""Benchmark of `/why`: the published perturbation loop against the fast version, in time and fidelity.

For each prompt (6–20 words) it runs, on the same objective:
- the reference: the published loop, one noise sample per iteration, the article's 1000 iterations;
- the fast version exactly as the bot runs it (config.yaml's `why` settings, time budget included);
- a converged answer: 8 published random starts, each run long with many samples per step, the
  learning rate decayed from 0.1 to 0.001 and the ratios averaged over the last quarter (Polyak
  averaging), and the mean of their σ. The loss has several local minima and a run's answer
  depends on its start (see `sigmas_fast`), so the expectation over starts is what the method
  estimates; one converged start would reward whichever method happened to share its start;
- (unless `--no-ceiling`) a second converged answer with other starts and noise: how well two
  converged answers agree bounds how well anything can agree with one.
Fidelity is Spearman's rank correlation of each method's token σ with the converged σ, and whether
the most important word (smallest σ) is the same. Prints a table; writes JSON to bench/results/why.json.

    python bench/why.py                       # the shipped model (config.yaml model.source)
    python bench/why.py --model PATH          # another model directory
    python bench/why.py --random-gpt2-small   # timing on a GPT-2-small-shaped random model
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402

from core.config import Config, WhyConfig, load_config  # noqa: E402
from model.explain.importance import (  # noqa: E402
    ARTICLE_ITERATIONS,
    Objective,
    annealed,
    build_objective,
    compute_dtype_for,
    frozen,
    init_ratios,
    noise_samples,
    phi_std_for,
    prepare,
    rank_correlation,
    sigmas_fast,
    sigmas_reference,
    to_sigmas,
    tokenize_prompt,
)
from model.explain.words import group_tokens, word_sigma  # noqa: E402
from model.loading import LoadedModel, load_model  # noqa: E402

PROMPTS = (
    "Once upon a time there lived a king who had three",
    "The fox looked up at the grapes and said that they were",
    "Holmes took the letter from his pocket and handed it to",
    "The little mermaid swam up to the surface of the sea and saw a great ship with",
    "When the old woman opened the door, the wolf jumped out and ran into the",
    "It was a dark and stormy night, and the doctor had not yet come back from the",
    "The youngest daughter was so beautiful that the sun itself was",
    "After many years the soldier came home, but his mother did not",
    "The miller's son sat down by the river and began to",
    "Watson, said Holmes, this is the strangest case that I have ever",
)


CONVERGED_LR = 0.1
"""Starting learning rate of the converged run (cosine-decayed to 0.001)."""
CONVERGED_STARTS = 8
DEFAULT_CONVERGED_STEPS = 150
"""With 8 samples per start and step: 1,200 noise samples per start, 9,600 in all."""
QUICK_REFERENCE_ITERATIONS = 100
"""A quick run times 100 published iterations and projects them to 1000 (see `_project_reference`)."""
BEFORE_ISSUE_14 = {
    "starts": 8,
    "max_steps": 20,
    "samples_per_step": 1,
    "antithetic": False,
    "antithetic_starts": False,
    "compute_dtype": "float32",
}
"""The fast version as it was before issue 14 ("today's"), run beside the new one with `--before`."""


@dataclass(frozen=True)
class Converged:
    sigmas: torch.Tensor
    elapsed_s: float


def converged_sigmas(
    objective: Objective, *, steps: int, samples: int, seed: int, starts: int = CONVERGED_STARTS
) -> Converged:
    """The objective's answer averaged over random starts: long runs, a decaying rate, iterate averaging."""
    start = time.monotonic()
    generator, ratio = init_ratios(objective, starts, seed)
    optimizer = torch.optim.Adam([ratio], lr=CONVERGED_LR)
    tail = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = annealed(CONVERGED_LR, step, steps, floor=0.01)
        optimizer.zero_grad()
        objective.loss(ratio, noise_samples(objective, starts * samples, generator), objective.target).sum().backward()
        optimizer.step()
        if step >= steps * 3 // 4:
            tail.append(ratio.detach().clone())
    sigmas = to_sigmas(objective, torch.stack(tail).mean(dim=0)).mean(dim=0)
    return Converged(sigmas=sigmas, elapsed_s=time.monotonic() - start)


def random_gpt2_small(directory: Path) -> Path:
    """A GPT-2-small-shaped model with random weights (the cost of a pass does not depend on the values).

    Its tokenizer is the tests' tiny byte-level BPE: token ids stay far below GPT-2's 50257, and the
    embedding and LM head keep GPT-2 small's full 50257 × 768 shape, so every matmul is GPT-2's.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.tiny_model import build_tiny_model

    build_tiny_model(directory, n_layer=1, n_embd=8, n_head=1)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(directory)
    return directory


def tiny_story_model(directory: Path) -> Path:
    """The tests' tiny GPT-2 (2 layers, 32 wide) trained briefly on its own sentences.

    Its predictions depend on the context (it has half-memorised the text), unlike a random model's,
    so the σ ranking has something to find; cheap enough for converged runs on a CPU.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tiny_model import TINY_TEXT, build_tiny_model

    build_tiny_model(directory, seed=3)
    model = AutoModelForCausalLM.from_pretrained(directory)
    ids = torch.tensor(AutoTokenizer.from_pretrained(directory)(TINY_TEXT)["input_ids"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(300):
        starts = torch.randint(0, len(ids) - 33, (16,))
        batch = torch.stack([ids[s : s + 32] for s in starts])
        optimizer.zero_grad()
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
    model.save_pretrained(directory)
    return directory


def word_of_smallest_sigma(prompt: str, offsets: list[tuple[int, int]], sigmas: torch.Tensor) -> str:
    words = group_tokens(prompt, offsets)
    values = sigmas.tolist()
    return min(words, key=lambda w: word_sigma([values[i] for i in w.token_indices])).text


def run(loaded: LoadedModel, prompts: list[str], args: argparse.Namespace, model_note: str, config: Config) -> dict:
    settings = {"fast": _why_settings(config.why, args)}
    if args.before:
        settings["fast_before"] = settings["fast"].model_copy(update=BEFORE_ISSUE_14)
    for steps in args.variant_max_steps or ():
        settings[f"fast_{steps}steps"] = settings["fast"].model_copy(update={"max_steps": steps})
    for spec in args.variant or ():
        settings.update([_variant(settings["fast"], spec)])
    rows = []
    with frozen(loaded.model):
        phi_std = phi_std_for(loaded, config.cache_dir)
        for why in settings.values():  # as the service does at its start (`why.prepare_at_start`)
            prepare(loaded, why, config.cache_dir)
        for index, prompt in enumerate(prompts):
            ids, offsets = tokenize_prompt(loaded, prompt, config.limits.max_prompt_tokens)
            setup_start = time.monotonic()
            objective = build_objective(loaded.model, torch.tensor(ids), phi_std)
            setup_s = time.monotonic() - setup_start
            cpu_start = time.process_time()
            runs = {"reference": sigmas_reference(objective, iterations=args.reference_iterations, seed=1000 + index)}
            cpu = {"reference": time.process_time() - cpu_start}
            for name, why in settings.items():
                cpu_start = time.process_time()
                runs[name] = sigmas_fast(
                    objective,
                    starts=why.starts,
                    max_steps=why.max_steps,
                    samples_per_step=why.samples_per_step,
                    patience=why.patience,
                    deadline=time.monotonic() + why.time_budget_s - setup_s,
                    seed=2000 + index,
                    antithetic=why.antithetic,
                    antithetic_starts=why.antithetic_starts,
                    compute_dtype=compute_dtype_for(why.compute_dtype, objective.model),
                )
                cpu[name] = time.process_time() - cpu_start
            row: dict = {"prompt": prompt, "words": len(prompt.split()), "tokens": len(ids), "methods": {}}
            for name, result in runs.items():
                row["methods"][name] = {
                    "seconds": result.elapsed_s + setup_s,
                    "cpu_seconds": cpu[name] + setup_s,
                    "steps": result.steps,
                    "samples": result.samples,
                    "stop": result.stop_reason,
                    "sigmas": result.sigmas.tolist(),
                }
            _project_reference(row["methods"]["reference"], args.reference_iterations)
            for name in settings:
                for kind in ("seconds", "cpu_seconds"):
                    row["methods"][name][kind.replace("seconds", "speedup")] = (
                        row["methods"]["reference"][kind] / row["methods"][name][kind]
                    )
            if args.converged_steps:
                converged = converged_sigmas(
                    objective, steps=args.converged_steps, samples=args.converged_samples, seed=3000 + index
                )
                row["converged"] = {
                    "seconds": converged.elapsed_s,
                    "sigmas": converged.sigmas.tolist(),
                    "top_word": word_of_smallest_sigma(prompt, offsets, converged.sigmas),
                }
                for name, result in runs.items():
                    if row["methods"][name].get("projected"):
                        continue
                    method = row["methods"][name]
                    method["rho"] = rank_correlation(result.sigmas, converged.sigmas)
                    method["top_word"] = word_of_smallest_sigma(prompt, offsets, result.sigmas)
                    method["top_word_agrees"] = method["top_word"] == row["converged"]["top_word"]
                if args.ceiling:
                    other = converged_sigmas(
                        objective, steps=args.converged_steps, samples=args.converged_samples, seed=4000 + index
                    )
                    row["converged"]["rho_ceiling"] = rank_correlation(other.sigmas, converged.sigmas)
            rows.append(row)
            print(_row_line(row), flush=True)
    return {
        "model": loaded.source,
        "model_note": model_note,
        "parameters_m": sum(p.numel() for p in loaded.model.parameters()) / 1e6,
        "dtype": str(loaded.dtype),
        "device": str(loaded.device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "fast_settings": {name: why.model_dump() for name, why in settings.items()},
        "reference_iterations": args.reference_iterations,
        "converged_steps": args.converged_steps,
        "converged_samples": args.converged_samples,
        "rows": rows,
        "summary": _summary(rows),
    }


def _project_reference(method: dict, iterations: int) -> None:
    """A reference cut short (to save time on a big model) is timed as the article's 1000 iterations.

    Every iteration costs the same (one sample, the same passes), so the time per iteration × 1000
    is the 1000-iteration time; the row says it was projected, and its σ are not used for fidelity.
    """
    if iterations >= ARTICLE_ITERATIONS or iterations == 0:
        return
    factor = ARTICLE_ITERATIONS / iterations
    method |= {
        "measured_iterations": iterations,
        "projected": True,
        "seconds": method["seconds"] * factor,
        "cpu_seconds": method["cpu_seconds"] * factor,
    }


def _variant(base: WhyConfig, spec: str) -> tuple[str, WhyConfig]:
    """`name:key=value,key=value` → a named copy of `base` with those `why` settings changed."""
    name, _, pairs = spec.partition(":")
    update: dict = {}
    for pair in filter(None, pairs.split(",")):
        key, _, value = pair.partition("=")
        default = getattr(base, key)
        update[key] = value == "true" if isinstance(default, bool) else type(default)(value)
    return name, WhyConfig.model_validate({**base.model_dump(), **update})


def _why_settings(why: WhyConfig, args: argparse.Namespace) -> WhyConfig:
    """config.yaml's `why` section, with any of its values overridden on the command line."""
    overrides = {
        name: getattr(args, name)
        for name in ("time_budget_s", "max_steps", "starts", "samples_per_step", "patience")
        if getattr(args, name) is not None
    }
    return why.model_copy(update=overrides)


def _row_line(row: dict) -> str:
    parts = [f"{row['tokens']:>3} tok"]
    for name, method in row["methods"].items():
        text = f"{name} {method['seconds']:6.1f}s/{method['steps']}st"
        if "speedup" in method:
            text += f" ×{method['speedup']:.1f} (cpu {method['cpu_seconds']:.1f}s ×{method['cpu_speedup']:.1f})"
        elif method.get("projected"):
            text += f" (projected from {method['measured_iterations']}; cpu {method['cpu_seconds']:.1f}s)"
        if "rho" in method:
            text += f" ρ{method['rho']:+.2f} top{method['top_word_agrees']:d}"
        parts.append(text)
    if "rho_ceiling" in row.get("converged", {}):
        parts.append(f"ceiling ρ{row['converged']['rho_ceiling']:+.2f}")
    return " | ".join(parts)


def _summary(rows: list[dict]) -> dict:
    summary: dict = {}
    for name in rows[0]["methods"] if rows else ():
        methods = [r["methods"][name] for r in rows]
        entry = {
            "median_s": statistics.median(m["seconds"] for m in methods),
            "median_cpu_s": statistics.median(m["cpu_seconds"] for m in methods),
            "total_s": sum(m["seconds"] for m in methods),
            "median_steps": statistics.median(m["steps"] for m in methods),
        }
        if "speedup" in methods[0]:
            entry["median_speedup"] = statistics.median(m["speedup"] for m in methods)
            entry["median_cpu_speedup"] = statistics.median(m["cpu_speedup"] for m in methods)
            entry["total_speedup"] = sum(r["methods"]["reference"]["seconds"] for r in rows) / entry["total_s"]
        if "rho" in methods[0]:
            entry["mean_rho"] = statistics.fmean(m["rho"] for m in methods)
            entry["median_rho"] = statistics.median(m["rho"] for m in methods)
            entry["top_word_agreement"] = statistics.fmean(m["top_word_agrees"] for m in methods)
        summary[name] = entry
    ceilings = [r["converged"]["rho_ceiling"] for r in rows if "rho_ceiling" in r.get("converged", {})]
    if ceilings:
        summary["converged_vs_converged"] = {"mean_rho": statistics.fmean(ceilings)}
    return summary


def _print_table(summary: dict) -> None:
    print(
        f"{'method':<18} {'median s':>9} {'median ×':>9} {'cpu s':>8} {'cpu ×':>7} {'steps':>6} {'mean ρ':>7} "
        f"{'median ρ':>8} {'top word':>8}"
    )
    columns = (
        ("median_s", "9.2f"),
        ("median_speedup", "9.1f"),
        ("median_cpu_s", "8.2f"),
        ("median_cpu_speedup", "7.1f"),
        ("median_steps", "6.0f"),
        ("mean_rho", "+7.2f"),
        ("median_rho", "+8.2f"),
        ("top_word_agreement", "8.0%"),
    )
    widths = (9, 9, 8, 7, 6, 7, 8, 8)
    for name, entry in summary.items():
        cells = [
            format(entry[key], fmt) if key in entry else "-".rjust(width)
            for (key, fmt), width in zip(columns, widths, strict=True)
        ]
        print(f"{name:<18} " + " ".join(cells))


def _pick_model(args: argparse.Namespace, config: Config, scratch: Path) -> tuple[str, str, bool]:
    """The model to measure, a note saying which it is, and whether its weights are random."""
    if args.random_gpt2_small:
        return str(random_gpt2_small(scratch)), "GPT-2-small-shaped, random weights", True
    if args.tiny_story:
        return str(tiny_story_model(scratch)), "tiny GPT-2 (2x32) trained briefly on the tests' text", False
    if args.model:
        return args.model, "given with --model", False
    if Path(config.model_source).is_dir():
        return config.model_source, "the shipped model (config.yaml model.source)", False
    print(
        f"{config.model.source} does not exist yet: falling back to a GPT-2-small-shaped random model "
        "(timings are representative, fidelity on random weights is not)",
        flush=True,
    )
    return str(random_gpt2_small(scratch)), "fallback: GPT-2-small-shaped, random weights", True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: config.yaml model.source)")
    parser.add_argument("--random-gpt2-small", action="store_true", help="use a GPT-2-small-shaped random model")
    parser.add_argument("--tiny-story", action="store_true", help="use the tests' tiny GPT-2, trained briefly")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many of the 10 prompts")
    parser.add_argument(
        "--reference-iterations",
        type=int,
        help=f"published iterations actually run (default {ARTICLE_ITERATIONS}; "
        f"{QUICK_REFERENCE_ITERATIONS} with --quick, projected to {ARTICLE_ITERATIONS})",
    )
    parser.add_argument(
        "--converged-steps",
        type=int,
        help="steps of the converged run (default 300; 0 = timing only, the default on random weights)",
    )
    parser.add_argument("--converged-samples", type=int, default=8, help="noise samples per start and step")
    parser.add_argument(
        "--ceiling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a second converged answer per prompt (the noise ceiling; on by default)",
    )
    parser.add_argument("--time-budget-s", dest="time_budget_s", type=float, help="override why.time_budget_s")
    parser.add_argument("--max-steps", dest="max_steps", type=int, help="override why.max_steps")
    parser.add_argument("--starts", type=int, help="override why.starts")
    parser.add_argument("--samples-per-step", dest="samples_per_step", type=int, help="override why.samples_per_step")
    parser.add_argument("--patience", type=int, help="override why.patience")
    parser.add_argument(
        "--variant-max-steps", type=int, nargs="*", help="also run the fast version with each of these max_steps"
    )
    parser.add_argument(
        "--before",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the fast version as it was before issue 14 (8 starts, 20 steps, fp32)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        help="also run a variant of the fast version: name:key=value,... (why settings), repeatable",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 prompts, 50 converged steps, the reference projected from 100 iterations: a smoke run",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "why.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts = min(args.prompts, 3)
    if args.reference_iterations is None:
        args.reference_iterations = QUICK_REFERENCE_ITERATIONS if args.quick else ARTICLE_ITERATIONS
    torch.set_num_threads(args.threads)
    config = load_config(ROOT / "config.yaml")
    with tempfile.TemporaryDirectory() as scratch:
        source, note, random_weights = _pick_model(args, config, Path(scratch))
        if args.converged_steps is None:
            args.converged_steps = 0 if random_weights else 50 if args.quick else DEFAULT_CONVERGED_STEPS
        loaded = load_model(source, device=config.model.device, dtype=config.model.dtype)
        print(
            f"model {source} ({note}); {sum(p.numel() for p in loaded.model.parameters()) / 1e6:.1f}M parameters, "
            f"{loaded.dtype}, {torch.get_num_threads()} thread(s)",
            flush=True,
        )
        result = run(loaded, list(PROMPTS[: args.prompts]), args, note, config)
    _print_table(result["summary"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
