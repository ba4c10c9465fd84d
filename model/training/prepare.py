"""`python -m model.training.prepare`: a training corpus, rebuilt from the raw files.

`--corpus tales` (the default) makes tales v2; `--corpus tinystories` makes the TinyStories corpus
(`model.training.tinystories`: truecasing, story boundaries, teacher-written stories, the valid
file held out); `--corpus mixture --part DIR:SHARE ...` mixes prepared corpora for fine-tuning
(`model.training.mixture`).

Tales v2:

Reads every book under `--raw` (checked against its `SHA256SUMS`), cleans and splits it into
tales (`model.training.gutenberg`), adds today's cleaned corpus (`--base`: its train.txt and
eval.txt), and writes `train.txt`, `eval.txt` and a data card (`DATA_CARD.md`, `card.json`) to
`--out`. Every tale of the base eval.txt stays out of training wherever it appears, and about one
tale group in `--eval-every` is held out as the new eval set (`model.training.heldout`). The run
ends by proving that no 13-word sequence of held-out text occurs in the training text; it fails
otherwise. Same inputs, same outputs, byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model.training.corpus import read_corpus
from model.training.errors import TrainingError
from model.training.gutenberg import Tale, decode, render, split_tales
from model.training.heldout import NGRAM, group_key, overlapping_ngrams, pick_held_out, same_tale, word_ngrams

BASE_WORK = "tales v1 (Grimm/Taylor, Andersen, Aesop, Holmes)"


@dataclass
class Split:
    """Where each tale went, and why the ones left out were left out."""

    train: list[Tale] = field(default_factory=list)
    eval: list[Tale] = field(default_factory=list)
    base_eval: list[Tale] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    dropped_words: Counter[str] = field(default_factory=Counter)

    def drop(self, tale: Tale, reason: str) -> None:
        self.dropped[reason] += 1
        self.dropped_words[reason] += tale.words


def read_checksums(raw: Path) -> dict[str, str]:
    sums = raw / "SHA256SUMS"
    if not sums.exists():
        return {}
    out = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.lstrip("*").removeprefix("./")] = digest
    return out


def read_books(raw: Path, min_words: int) -> tuple[list[Tale], dict[str, dict[str, object]]]:
    """Every book's tales, and per book its sha256 and sizes; a changed file is refused."""
    if not raw.is_dir():
        raise TrainingError(f"The raw corpus folder `{raw}` does not exist.")
    expected = read_checksums(raw)
    tales: list[Tale] = []
    books: dict[str, dict[str, object]] = {}
    for path in sorted(raw.rglob("*.txt")):
        name = path.relative_to(raw).as_posix()
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if name in expected and expected[name] != digest:
            raise TrainingError(f"`{name}` does not match its sha256 in SHA256SUMS: the raw file changed.")
        text = decode(data)
        book = split_tales(name, text, min_words=min_words)
        tales.extend(book)
        books[name] = {"sha256": digest, "bytes": len(data), "raw_words": len(text.split())}
    if not tales:
        raise TrainingError(f"No tales found under `{raw}`.")
    return tales, books


def read_base(path: Path, role: str) -> list[Tale]:
    corpus = read_corpus(path, role)
    return [Tale(work=BASE_WORK, title=doc.split("\n", 1)[0].strip(), text=doc) for doc in corpus.documents]


def split(raw_tales: list[Tale], base_train: list[Tale], base_eval: list[Tale], every: int) -> Split:
    """Hold out base-eval tales everywhere, one group in `every` as new eval, then n-gram-clean train."""
    result = Split(base_eval=base_eval)
    eval_titles = [tale.title for tale in base_eval]
    picked = pick_held_out({group_key(t.title) for t in raw_tales}, every)
    picked_titles = [t.title for t in raw_tales if group_key(t.title) in picked]

    candidates: list[Tale] = []
    for tale in [*base_train, *raw_tales]:
        if any(same_tale(tale.title, title) for title in eval_titles):
            result.drop(tale, "same tale as one in tales/eval.txt")
        elif any(same_tale(tale.title, title) for title in picked_titles):
            if tale.work == BASE_WORK:
                result.drop(tale, "same tale as one in the new eval set")
            else:
                result.eval.append(tale)
        else:
            candidates.append(tale)

    held = set().union(*(word_ngrams(t.text) for t in [*base_eval, *result.eval]))
    for tale in candidates:
        if word_ngrams(tale.text) & held:
            result.drop(tale, f"shares a {NGRAM}-word sequence with held-out text")
        else:
            result.train.append(tale)
    return result


def count_tokens(texts: list[str], tokenizer_dir: Path | None) -> list[int] | None:
    if tokenizer_dir is None:
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return [len(tokenizer(text)["input_ids"]) for text in texts]


def write_card(out: Path, result: Split, books: dict[str, dict[str, object]], tokenizer_dir: Path | None) -> dict:
    """DATA_CARD.md and card.json: works, tales, words and tokens per work, the split, sha256s."""
    per_work: dict[str, Counter[str]] = defaultdict(Counter)
    for role, tales in (("train", result.train), ("eval", result.eval)):
        for tale in tales:
            per_work[tale.work][f"{role}_tales"] += 1
            per_work[tale.work][f"{role}_words"] += tale.words
    works = sorted(per_work)
    tokens = count_tokens(
        ["\n\n".join(t.text for t in result.train + result.eval if t.work == work) for work in works], tokenizer_dir
    )
    files = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in ("train.txt", "eval.txt")}
    card = {
        "works": {
            work: {**per_work[work], **({"tokens": tokens[i]} if tokens else {}), **books.get(work, {})}
            for i, work in enumerate(works)
        },
        "dropped": {
            reason: {"tales": n, "words": result.dropped_words[reason]} for reason, n in result.dropped.items()
        },
        "files": files,
        "ngram_check": {"n": NGRAM, "overlapping": 0},
        "tokenizer_for_counts": str(tokenizer_dir) if tokenizer_dir else None,
    }
    (out / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    lines = [
        "# Data card: tales v2",
        "",
        "Made by `python -m model.training.prepare` from the raw books (sha256 below) and today's cleaned",
        "corpus (`../shared/corpus/tales/`). One document per tale or chapter, title line first.",
        "",
        "| work | sha256 (raw) | train tales | train words | eval tales | eval words |"
        + (" tokens |" if tokens else ""),
        "| --- | --- | ---: | ---: | ---: | ---: |" + (" ---: |" if tokens else ""),
    ]
    for i, work in enumerate(works):
        c = per_work[work]
        sha = str(books.get(work, {}).get("sha256", "—"))[:12]
        row = (
            f"| {work} | `{sha}` | {c['train_tales']} | {c['train_words']:,} | "
            f"{c['eval_tales']} | {c['eval_words']:,} |"
        )
        lines.append(row + (f" {tokens[i]:,} |" if tokens else ""))
    total = {k: sum(per_work[w][k] for w in works) for k in ("train_tales", "train_words", "eval_tales", "eval_words")}
    lines.append(
        f"| **all** | | {total['train_tales']} | {total['train_words']:,} | {total['eval_tales']} | "
        f"{total['eval_words']:,} |" + (f" {sum(tokens):,} |" if tokens else "")
    )
    lines += ["", "Left out of training:", ""]
    for reason, n in sorted(result.dropped.items()):
        lines.append(f"- {n} tales ({result.dropped_words[reason]:,} words): {reason}")
    lines += [
        "",
        f"Check: no {NGRAM}-word sequence of held-out text (tales/eval.txt and the new eval.txt) occurs in",
        "train.txt (case and punctuation ignored).",
        "",
        "| file | sha256 |",
        "| --- | --- |",
        *(f"| {name} | `{digest}` |" for name, digest in files.items()),
    ]
    if tokens:
        lines += ["", f"Tokens counted with the tokenizer in `{tokenizer_dir}`."]
    (out / "DATA_CARD.md").write_text("\n".join(lines) + "\n")
    return card


def prepare(raw: Path, base: Path, out: Path, every: int, min_words: int, tokenizer_dir: Path | None) -> dict:
    raw_tales, books = read_books(raw, min_words)
    base_train = read_base(base / "train.txt", "base training")
    base_eval = read_base(base / "eval.txt", "base evaluation")
    result = split(raw_tales, base_train, base_eval, every)
    held = set().union(*(word_ngrams(t.text) for t in [*base_eval, *result.eval]))
    leaks = overlapping_ngrams((t.text for t in result.train), held)
    if leaks:
        raise TrainingError(f"{leaks} held-out {NGRAM}-word sequences occur in the training text.")
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.txt").write_text(render(result.train))
    (out / "eval.txt").write_text(render(result.eval))
    return write_card(out, result, books, tokenizer_dir)


TINYSTORIES = Path("../shared/corpus/tinystories")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.training.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=("tales", "tinystories", "mixture"), default="tales")
    parser.add_argument("--out", help="where train.txt, eval.txt and the card go (default data/corpus/<corpus>)")
    tiny = parser.add_argument_group("--corpus tinystories")
    tiny.add_argument("--cased", default=str(TINYSTORIES / "train-v1-cased-2MiB.txt"))
    tiny.add_argument("--lower", default=str(TINYSTORIES / "train-v1-lowercase-4MB.txt"))
    tiny.add_argument("--valid", default=str(TINYSTORIES / "valid-v2-public.txt"), help="evaluation only")
    tiny.add_argument("--teacher", default="data/teacher", help="python -m model.training.teacher makes it")
    tiny.add_argument("--synthetic", action="append", default=[], help="a file of teacher-written stories (repeatable)")
    mixture = parser.add_argument_group("--corpus mixture")
    mixture.add_argument(
        "--part", action="append", default=[], help="a prepared corpus folder and the share of it: DIR or DIR:0.5"
    )
    tales = parser.add_argument_group("--corpus tales")
    tales.add_argument("--raw", default="../shared/corpus/raw-v2", help="folder of raw books (with SHA256SUMS)")
    tales.add_argument("--base", default="../shared/corpus/tales", help="today's cleaned corpus (train.txt, eval.txt)")
    parser.add_argument("--eval-every", type=int, default=20, help="hold out about one tale group (story) in N")
    tales.add_argument("--min-words", type=int, default=150, help="shorter sections are not tales (contents, notes)")
    tales.add_argument("--tokenizer", help="a tokenizer folder to count tokens per work with (optional)")
    options = parser.parse_args(argv)
    options.out = (
        options.out
        or {
            "tales": "data/corpus/tales-v2",
            "tinystories": "data/corpus/tinystories",
            "mixture": "data/corpus/mixture",
        }[options.corpus]
    )
    if options.corpus == "tinystories":
        return _main_tinystories(options)
    if options.corpus == "mixture":
        return _main_mixture(options)
    try:
        card = prepare(
            Path(options.raw),
            Path(options.base),
            Path(options.out),
            options.eval_every,
            options.min_words,
            Path(options.tokenizer) if options.tokenizer else None,
        )
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((Path(options.out) / "DATA_CARD.md").read_text())
    print(f"train/eval sha256: {card['files']}")
    return 0


def _main_mixture(options: argparse.Namespace) -> int:
    from model.training.mixture import Part, mix

    try:
        mix([Part.parse(spec) for spec in options.part], Path(options.out))
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((Path(options.out) / "MIXTURE.md").read_text())
    return 0


def _main_tinystories(options: argparse.Namespace) -> int:
    from model.training.tinystories import prepare_tinystories

    try:
        prepare_tinystories(
            Path(options.cased),
            Path(options.lower),
            Path(options.valid),
            Path(options.teacher),
            [Path(p) for p in options.synthetic],
            Path(options.out),
            options.eval_every,
        )
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((Path(options.out) / "DATA_CARD.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
