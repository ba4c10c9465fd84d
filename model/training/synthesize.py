"""`python -m model.training.synthesize`: stories written by the teacher (sequence-level distillation).

    python -m model.training.synthesize --teacher data/teacher --stories 4096 --temperature 0.8 \
        --out data/synthetic/t0.8.txt

Each story starts from the start-of-story token and is sampled with a seed of its own (`--seed`
plus its number), so story n is the same whichever batch it was written in, and a stopped run
goes on with `--resume` from the stories already in the file. A story that has not ended within
`--max-tokens` (or the teacher's context) is dropped: a student must not learn that stories never
end. The file is the corpus format (stories separated by `<|endoftext|>` lines), with a JSON
sidecar of the settings and counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

from core.settings import DecodingSettings
from model.decoding import SeededSampling
from model.training.corpus import SEPARATOR, split_documents
from model.training.errors import TrainingError


def write_stories(
    model, tokenizer, first: int, count: int, seed: int, settings: DecodingSettings, max_tokens: int
) -> list[str | None]:
    """Stories `first` … `first + count − 1`; None for one that did not end in `max_tokens`."""
    eos = tokenizer.eos_token_id
    start = torch.full((count, 1), eos, dtype=torch.long)
    sampler = SeededSampling([(settings, seed + first + i) for i in range(count)], torch.device("cpu"))
    with torch.inference_mode():
        output = model.generate(
            input_ids=start,
            attention_mask=torch.ones_like(start),
            do_sample=False,
            max_new_tokens=max_tokens,
            logits_processor=LogitsProcessorList([sampler]),
            eos_token_id=eos,
            pad_token_id=eos,
        )
    stories: list[str | None] = []
    for row in output[:, 1:].tolist():
        if eos not in row:
            stories.append(None)
            continue
        text = tokenizer.decode(row[: row.index(eos)], skip_special_tokens=True).strip()
        stories.append(text or None)
    return stories


def synthesize(options: argparse.Namespace) -> dict:
    out = Path(options.out)
    meta_path = out.with_suffix(".json")
    settings = DecodingSettings(
        strategy="sampling", temperature=options.temperature, top_k=options.top_k, top_p=options.top_p
    )
    record = {
        "teacher": options.teacher,
        "temperature": options.temperature,
        "top_k": options.top_k,
        "top_p": options.top_p,
        "seed": options.seed,
        "max_tokens": options.max_tokens,
    }
    done, kept, dropped, seconds = 0, 0, 0, 0.0
    if out.exists():
        if not options.resume:
            raise TrainingError(f"`{out}` exists: pass --resume to add to it, or choose another --out.")
        meta = json.loads(meta_path.read_text())
        if any(meta.get(k) != v for k, v in record.items()):
            raise TrainingError(f"`{out}` was written with other settings ({meta_path}); use another --out.")
        done, dropped, seconds = meta["attempted"], meta["dropped"], meta["seconds"]
        kept = len(split_documents(out.read_text(encoding="utf-8")))
    tokenizer = AutoTokenizer.from_pretrained(options.teacher)
    model = AutoModelForCausalLM.from_pretrained(options.teacher, dtype=torch.float32).eval()
    max_tokens = min(options.max_tokens, model.config.max_position_embeddings - 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    while done < options.stories:
        count = min(options.batch_size, options.stories - done)
        started = time.monotonic()
        stories = write_stories(model, tokenizer, done, count, options.seed, settings, max_tokens)
        good = [s for s in stories if s is not None]
        with out.open("a", encoding="utf-8") as f:
            f.writelines(f"{story}\n{SEPARATOR}\n" for story in good)
        done, kept, dropped = done + count, kept + len(good), dropped + count - len(good)
        seconds += time.monotonic() - started
        meta = {**record, "attempted": done, "kept": kept, "dropped": dropped, "seconds": round(seconds, 1)}
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        words = sum(len(s.split()) for s in good)
        print(
            f"{done}/{options.stories} stories, {kept} kept; "
            f"last batch {words / (time.monotonic() - started):.0f} words/s",
            flush=True,
        )
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.training.synthesize", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--teacher", default="data/teacher", help="a model directory (python -m model.training.teacher)"
    )
    parser.add_argument("--out", required=True, help="text file to write (a .json of the settings beside it)")
    parser.add_argument("--stories", type=int, required=True, help="stories to attempt in all")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="story n is sampled with seed + n")
    parser.add_argument("--max-tokens", type=int, default=511, help="a story longer than this is dropped")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="add to an existing --out written with the same settings")
    options = parser.parse_args(argv)
    torch.set_num_threads(options.threads)
    try:
        meta = synthesize(options)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
