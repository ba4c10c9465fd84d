"""A training mixture of prepared corpora, for fine-tuning on tales without forgetting TinyStories.

Each part is a prepared corpus folder (train.txt and eval.txt) and the share of its documents to
take; documents are picked and interleaved by a hash of their text, so the same parts give the
same mixture, byte for byte, and a document's place does not depend on the other parts. The eval
file mixes the parts' eval files the same way, so a run's early stopping watches both kinds of
story.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.training.corpus import SEPARATOR, read_corpus
from model.training.errors import TrainingError


@dataclass(frozen=True)
class Part:
    folder: Path
    share: float

    @classmethod
    def parse(cls, spec: str) -> Part:
        """`FOLDER` or `FOLDER:SHARE` (a share of its documents, 0–1)."""
        folder, _, share = spec.rpartition(":") if ":" in spec else (spec, "", "1")
        try:
            value = float(share)
        except ValueError as exc:
            raise TrainingError(f"`{spec}`: the share after `:` must be a number from 0 to 1.") from exc
        if not 0 < value <= 1:
            raise TrainingError(f"`{spec}`: the share must lie in (0, 1].")
        return cls(Path(folder), value)


def _rank(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16)


def _taken(documents: Sequence[str], share: float) -> list[str]:
    """About `share` of the documents, chosen by hash."""
    return [doc for doc in documents if (_rank("take" + doc) % 10_000) < share * 10_000]


def mix(parts: Sequence[Part], out: Path) -> dict[str, dict[str, int]]:
    """Write train.txt, eval.txt and MIXTURE.md to `out`; return the counts per part."""
    if not parts:
        raise TrainingError("Give at least one --part.")
    counts: dict[str, dict[str, int]] = {}
    files: dict[str, list[str]] = {"train.txt": [], "eval.txt": []}
    for part in parts:
        for name in files:
            corpus = read_corpus(part.folder / name, f"{part.folder} {name}")
            taken = _taken(corpus.documents, part.share)
            files[name] += taken
            counts.setdefault(str(part.folder), {})[name] = len(taken)
            counts[str(part.folder)][name.replace(".txt", " bytes")] = sum(len(d.encode()) for d in taken)
    out.mkdir(parents=True, exist_ok=True)
    for name, documents in files.items():
        documents.sort(key=_rank)
        (out / name).write_text("".join(f"{doc}\n{SEPARATOR}\n" for doc in documents), encoding="utf-8")
    lines = [
        "# Mixture",
        "",
        "| part | share | train documents | train bytes | eval documents |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for part in parts:
        c = counts[str(part.folder)]
        lines.append(
            f"| `{part.folder}` | {part.share:g} | {c['train.txt']:,} | {c['train bytes']:,} | {c['eval.txt']:,} |"
        )
    digests = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in files}
    lines += ["", "| file | sha256 |", "| --- | --- |", *(f"| {n} | `{d}` |" for n, d in digests.items())]
    (out / "MIXTURE.md").write_text("\n".join(lines) + "\n")
    return counts
