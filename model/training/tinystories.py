"""The TinyStories corpus: the cased sample, the lower-cased one given its capitals and its story
boundaries back, teacher-written stories if given, and no 13-word sequence of the valid file.

What comes in (`../shared/corpus/tinystories/`, see its SOURCES.md):
- the cased file: stories separated by `<|endoftext|>` lines, paragraphs on single lines, the
  last story cut off (it is dropped);
- the lower-cased file: the same stories first, then as many again; UTF-8 that was read as
  Windows-1252 ("â€œ"); paragraphs separated by blank lines and stories by a single line break,
  except in stories that break their paragraphs with single line breaks too;
- the valid file: evaluation only.

What is measured on the overlap, where the truth is known, goes into the data card: the
truecaser's share of words right (learnt on one half of the cased stories, scored on the other,
both ways round), and the story splitter's boundaries against the cased file's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from model.training.corpus import SEPARATOR, split_documents
from model.training.errors import TrainingError
from model.training.heldout import NGRAM, overlapping_ngrams, word_ngrams
from model.training.story_split import candidate_chunks, join_stories, story_margins
from model.training.truecase import Truecaser, fix_mojibake, word_accuracy

BREAK_MARGIN = -6.0
"""A new story starts where the teacher finds it at most this much less likely (nats) than the
same story going on. Fitted on the first half of the overlap's candidate breaks (11 wrong of
1,205 there); it reflects the prior: 96 % of the candidates are real boundaries."""
MIN_WORDS = 30
"""Shorter pieces of the lower-cased file are fragments, not stories."""


@dataclass
class Report:
    """What the data card says about how the corpus was made."""

    truecase: list[tuple[int, int]] = field(default_factory=list)
    split: dict[str, int] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


def cased_stories(path: Path) -> list[str]:
    """The cased file's complete stories (its last one is cut off mid-sentence)."""
    stories = split_documents(path.read_text(encoding="utf-8"))
    return stories[:-1]


def overlap_end(lower: str, stories: Sequence[str]) -> int:
    """Where the cased file's last complete story ends in the lower-cased text."""
    last_paragraph = fix_mojibake(stories[-1].lower()).split("\n")[-1].strip()
    at = lower.find(last_paragraph, lower.find(fix_mojibake(stories[-1][:60].lower())))
    if at < 0:
        raise TrainingError("The lower-cased file does not hold the cased file's stories: wrong files?")
    return at + len(last_paragraph)


def truecase_accuracy(stories: Sequence[str]) -> list[tuple[int, int]]:
    """Words right and words in all, learnt on one half and scored on the other, both ways round."""
    half = len(stories) // 2
    folds = [(stories[:half], stories[half:]), (stories[half:], stories[:half])]
    results = []
    for learn, score in folds:
        caser = Truecaser().learn(learn)
        right = total = 0
        for story in score:
            r, n = word_accuracy(caser.apply(story.lower()), story)
            right, total = right + r, total + n
        results.append((right, total))
    return results


def story_starts(stories: Sequence[str]) -> set[int]:
    """Word offsets at which each story starts, in the stories' words run together."""
    starts, offset = set(), 0
    for story in stories:
        starts.add(offset)
        offset += len(story.split())
    return starts


def split_lower(
    text: str, caser: Truecaser, teacher, tokenizer, separator_id: int
) -> tuple[list[str], list[str], list[bool]]:
    """Lower-cased text as stories: the candidate chunks, truecased, joined where the teacher says."""
    chunks = [caser.apply(chunk) for chunk in candidate_chunks(text)]
    breaks = [m > BREAK_MARGIN for m in story_margins(teacher, tokenizer, chunks, separator_id)]
    return join_stories(chunks, breaks), chunks, breaks


def held_out_ngrams(valid: Path) -> set[tuple[str, ...]]:
    paragraphs = valid.read_text(encoding="utf-8").split("\n\n")
    return set().union(*(word_ngrams(p) for p in paragraphs))


def is_eval_story(story: str, every: int) -> bool:
    """About one story in `every`, by a hash of its text: the same story always goes the same way."""
    return int(hashlib.sha256(story.encode()).hexdigest(), 16) % every == 0


def build(
    cased: Path,
    lower: Path,
    valid: Path,
    teacher_dir: Path,
    synthetic: Sequence[Path],
    eval_every: int,
    report: Report,
) -> tuple[list[str], list[str]]:
    """Training and evaluation stories; `report` is filled in along the way."""
    real = cased_stories(cased)
    report.truecase = truecase_accuracy(real)
    lower_text = fix_mojibake(lower.read_text(encoding="utf-8"))
    end = overlap_end(lower_text, real)
    caser = Truecaser().learn(real)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    sep = tokenizer.convert_tokens_to_ids(SEPARATOR)

    found, chunks, _ = split_lower(lower_text[:end], caser, teacher, tokenizer, sep)
    truth, predicted, candidates = story_starts(real), story_starts(found), story_starts(chunks)
    report.split = {
        "true boundaries": len(truth) - 1,
        "candidate breaks": len(candidates) - 1,
        "candidates that are boundaries": len(candidates & truth) - 1,
        "found": len(predicted) - 1,
        "found and true": len(predicted & truth) - 1,
        "missed": len(truth - predicted),
        "false": len(predicted - truth),
    }
    recovered, _, _ = split_lower(lower_text[end:], caser, teacher, tokenizer, sep)
    fragments = [s for s in recovered if len(s.split()) < MIN_WORDS]
    recovered = [s for s in recovered if len(s.split()) >= MIN_WORDS]
    report.dropped[f"lower-cased pieces under {MIN_WORDS} words"] = len(fragments)

    sources = {"cased": real, "lower-cased, truecased": recovered}
    for path in synthetic:
        sources[f"teacher: {path.name}"] = split_documents(path.read_text(encoding="utf-8"))
    held = held_out_ngrams(valid)
    train, evaluation = [], []
    for name, stories in sources.items():
        kept = [s for s in stories if not word_ngrams(s) & held]
        report.dropped[f"{name}: shares a {NGRAM}-word sequence with the valid file"] = len(stories) - len(kept)
        is_real = not name.startswith("teacher")
        held_here = [s for s in kept if is_real and is_eval_story(s, eval_every)]
        train_here = [s for s in kept if not (is_real and is_eval_story(s, eval_every))]
        train += train_here
        evaluation += held_here
        report.counts[name] = {
            "train stories": len(train_here),
            "train words": sum(len(s.split()) for s in train_here),
            "eval stories": len(held_here),
        }
    leaks = overlapping_ngrams(train, held)
    if leaks:
        raise TrainingError(f"{leaks} {NGRAM}-word sequences of the valid file occur in the training text.")
    return train, evaluation


def render(stories: Sequence[str]) -> str:
    return "".join(f"{story}\n{SEPARATOR}\n" for story in stories)


def write_card(out: Path, report: Report, inputs: dict[str, Path]) -> None:
    files = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in ("train.txt", "eval.txt")}
    lines = [
        "# Data card: TinyStories (tales v3, stage 1)",
        "",
        "Made by `python -m model.training.prepare --corpus tinystories` (`model/training/tinystories.py`).",
        "TinyStories (Eldan & Li, 2023), CDLA-Sharing-1.0: the text stays out of the repository; models",
        "trained on it may ship.",
        "",
        "| input | sha256 |",
        "| --- | --- |",
        *(f"| `{p}` | `{hashlib.sha256(p.read_bytes()).hexdigest()}` |" for p in inputs.values()),
        "",
        "## Capitals given back (truecaser)",
        "",
    ]
    for i, (right, total) in enumerate(report.truecase, 1):
        lines.append(f"- fold {i}: {right:,} of {total:,} words right ({right / total:.2%})")
    right = sum(r for r, _ in report.truecase)
    total = sum(n for _, n in report.truecase)
    lines += [f"- both folds: **{right / total:.2%}**", "", "## Story boundaries found (on the overlap)", ""]
    lines += [f"- {key}: {value:,}" for key, value in report.split.items()]
    lines += ["", "## What went where", "", "| source | train stories | train words | eval stories |"]
    lines += ["| --- | ---: | ---: | ---: |"]
    for name, c in report.counts.items():
        lines.append(f"| {name} | {c['train stories']:,} | {c['train words']:,} | {c['eval stories']:,} |")
    lines += ["", "Left out:", ""]
    lines += [f"- {reason}: {n:,}" for reason, n in report.dropped.items()]
    lines += [
        "",
        f"Check: no {NGRAM}-word sequence of the valid file occurs in train.txt (case and punctuation ignored).",
        "",
        "| file | sha256 |",
        "| --- | --- |",
        *(f"| {name} | `{digest}` |" for name, digest in files.items()),
    ]
    (out / "DATA_CARD.md").write_text("\n".join(lines) + "\n")


def prepare_tinystories(
    cased: Path,
    lower: Path,
    valid: Path,
    teacher_dir: Path,
    synthetic: Sequence[Path],
    out: Path,
    eval_every: int = 20,
) -> Report:
    for path in (cased, lower, valid, *synthetic):
        if not path.is_file():
            raise TrainingError(f"`{path}` does not exist.")
    if not (teacher_dir / "config.json").is_file():
        raise TrainingError(f"No teacher in `{teacher_dir}`: run `python -m model.training.teacher` first.")
    report = Report()
    train, evaluation = build(cased, lower, valid, teacher_dir, synthetic, eval_every, report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.txt").write_text(render(train), encoding="utf-8")
    (out / "eval.txt").write_text(render(evaluation), encoding="utf-8")
    inputs = {"cased": cased, "lower": lower, "valid": valid}
    inputs |= {p.name: p for p in synthetic}
    write_card(out, report, inputs)
    return report
