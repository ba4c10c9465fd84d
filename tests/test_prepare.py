"""The tales v2 corpus preparation on small books made here: cleaning, splitting, holding out."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from model.training.errors import TrainingError
from model.training.gutenberg import decode, split_tales, strip_licence
from model.training.heldout import same_tale, word_ngrams
from model.training.prepare import prepare

PROSE = (
    "Once there was a miller who had a daughter, and she could spin straw into gold, or so he said "
    "to the king one morning when the frost lay on the fields and the birds were silent. "
)
EVAL_PASSAGE = (
    "There was once a fisherman who lived with his wife in a pig-stye close by the sea, and every day "
    "he went out fishing, and he fished and fished."
)


def book(*tales: tuple[str, str]) -> str:
    body = "\n\n".join(f"{title}\n\n{text}" for title, text in tales)
    return (
        "The Project Gutenberg EBook of Test Tales\n\nThis eBook is for the use of anyone anywhere.\n\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK TEST TALES ***\n\n\n"
        "Produced by Somebody Kind\n\nTEST TALES\n\nCONTENTS\n\n     THE FIRST TALE\n     THE SECOND TALE\n\n"
        f"{body}\n\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK TEST TALES ***\n\n"
        "Section 1. General Terms of Use and Redistributing Project Gutenberg-tm electronic works\n"
    )


def wrapped(text: str, width: int = 60) -> str:
    """Hard-wrap like a Gutenberg file."""
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def test_licence_contents_and_notes_are_cut_and_tales_split_at_their_titles() -> None:
    text = book(
        ("THE FIRST TALE", wrapped(PROSE * 3) + "\n\n[Illustration: A miller at\nhis wheel]\n\n" + wrapped(PROSE * 2)),
        ("THE SECOND TALE", wrapped("The king was pleased[1] and said so. " + PROSE * 4)),
    )
    assert "START OF" not in strip_licence(text) and "General Terms" not in strip_licence(text)
    tales = split_tales("test.txt", text)
    assert [t.title for t in tales] == ["The First Tale", "The Second Tale"]
    joined = "\n".join(t.text for t in tales)
    assert "Illustration" not in joined and "[1]" not in joined and "Produced by" not in joined
    assert "Gutenberg" not in joined and "CONTENTS" not in joined
    # Hard wraps joined: a paragraph is one line.
    assert all("\n" not in para for t in tales for para in t.text.split("\n\n"))


def test_latin1_books_and_crlf_are_read() -> None:
    assert decode("Märchen\r\nline".encode("latin-1")) == "Märchen\nline"


def test_titles_of_one_tale_in_other_translations_match() -> None:
    assert same_tale("The Fisherman And His Wife", "19 The Fisherman and His Wife")
    assert same_tale("The Valiant Little Tailor", "THE BRAVE LITTLE TAILOR")
    assert same_tale("Cinderella", "Cinderilla; or, the Little Glass Slipper")
    assert not same_tale("The Fisherman And His Wife", "The Goose-Girl")


def write_corpus(tmp_path: Path, raw_text: str, *, checksum: str | None = None) -> tuple[Path, Path]:
    raw, base = tmp_path / "raw", tmp_path / "base"
    raw.mkdir()
    base.mkdir()
    data = raw_text.encode()
    (raw / "book.txt").write_bytes(data)
    (raw / "SHA256SUMS").write_text(f"{checksum or hashlib.sha256(data).hexdigest()}  book.txt\n")
    (base / "train.txt").write_text("The Old Tale\n\n" + PROSE * 3 + "\n<|endoftext|>\nAnother\n\n" + PROSE + "\n")
    (base / "eval.txt").write_text("The Fisherman And His Wife\n\n" + EVAL_PASSAGE + "\n")
    return raw, base


def test_held_out_tales_stay_out_of_training_in_every_telling(tmp_path: Path) -> None:
    text = book(
        ("THE FISHERMAN AND HIS WIFE", wrapped("In another telling. " + PROSE * 3)),
        ("A TALE UNDER ANOTHER NAME", wrapped(PROSE * 2 + EVAL_PASSAGE + " " + PROSE)),
        ("THE HONEST WOODCUTTER", wrapped("A woodcutter went into the forest. " + PROSE * 3)),
    )
    raw, base = write_corpus(tmp_path, text)
    card = prepare(raw, base, tmp_path / "out", every=10**9, min_words=50, tokenizer_dir=None)
    train = (tmp_path / "out" / "train.txt").read_text()
    assert "In another telling" not in train  # same title as an eval tale
    assert "A Tale Under Another Name" not in train  # copies a 13-word passage of eval
    assert "The Honest Woodcutter" in train and "The Old Tale" in train
    held = word_ngrams(EVAL_PASSAGE)
    assert not word_ngrams(train) & held
    assert card["ngram_check"] == {"n": 13, "overlapping": 0}
    assert "sha256" in (tmp_path / "out" / "DATA_CARD.md").read_text()
    # Reproducible: the same inputs give the same files.
    again = prepare(raw, base, tmp_path / "again", every=10**9, min_words=50, tokenizer_dir=None)
    assert again["files"] == card["files"]


def test_a_changed_raw_file_is_refused(tmp_path: Path) -> None:
    raw, base = write_corpus(tmp_path, book(("A TALE", PROSE * 3)), checksum="0" * 64)
    with pytest.raises(TrainingError, match="sha256"):
        prepare(raw, base, tmp_path / "out", every=20, min_words=50, tokenizer_dir=None)
