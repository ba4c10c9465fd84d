"""Reading a corpus, splitting it into documents and packing it into training blocks."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from model.training.corpus import (
    IGNORE_INDEX,
    SEPARATOR,
    BlockDataset,
    build_blocks,
    encode_documents,
    pack_documents,
    read_corpus,
    split_documents,
)
from model.training.errors import TrainingError

STORIES = [
    "The Fox and the Crow\n\nA fox saw a crow with a piece of cheese.",
    "The Little Mermaid\n\nFar out in the ocean the water is as blue as a cornflower.",
    "A Scandal in Bohemia\n\nTo Sherlock Holmes she is always the woman.",
]


def write_corpus(path: Path, documents: list[str]) -> Path:
    path.write_text(f"\n{SEPARATOR}\n".join(documents) + "\n", encoding="utf-8")
    return path


def test_split_documents_on_lines_holding_only_the_separator() -> None:
    """Only a line that is the separator (spaces allowed) splits; blank documents are dropped."""
    text = f"{SEPARATOR}\none\n  {SEPARATOR}  \n\n{SEPARATOR}\ntwo says {SEPARATOR} inline\n"
    assert split_documents(text) == ["one", f"two says {SEPARATOR} inline"]


def test_read_corpus_records_hash_size_and_documents(tmp_path: Path) -> None:
    """The model card's facts come from here: sha256 of the bytes, byte count, documents."""
    import hashlib

    path = write_corpus(tmp_path / "t.txt", STORIES)
    corpus = read_corpus(path, "training")
    assert corpus.documents == STORIES
    assert corpus.n_bytes == path.stat().st_size
    assert corpus.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_packed_stream_has_the_separator_after_every_document() -> None:
    """Documents are joined only through the separator id."""
    assert pack_documents([[5, 6], [7], [8, 9]], sep_id=0) == [5, 6, 0, 7, 0, 8, 9, 0]


def test_blocks_never_join_two_documents_without_the_separator(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Cut into blocks, the stream is exactly each document's tokens followed by `<|endoftext|>`."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    corpus = read_corpus(write_corpus(tmp_path / "t.txt", STORIES * 3), "training")
    blocks = build_blocks(corpus, "training", tokenizer, block_size=16)
    flat = blocks.input_ids[blocks.attention_mask == 1].tolist()
    expected: list[int] = []
    for doc in STORIES * 3:
        expected += tokenizer(doc)["input_ids"] + [tokenizer.eos_token_id]
    assert flat == expected
    assert blocks.input_ids.shape[1] == 16


def test_separator_line_becomes_one_special_token(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The separator is the eos id, never spelt out as ordinary `<`, `|`, ... tokens."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    corpus = read_corpus(write_corpus(tmp_path / "t.txt", STORIES), "training")
    ids = pack_documents(encode_documents(tokenizer, corpus.documents), tokenizer.eos_token_id)
    assert ids.count(tokenizer.eos_token_id) == len(STORIES)
    assert "endoftext" not in tokenizer.decode(ids, skip_special_tokens=True)


def test_last_block_is_padded_and_left_out_of_the_loss() -> None:
    """No evaluation token is dropped; padding has attention 0 and label IGNORE_INDEX."""
    blocks = BlockDataset(list(range(1, 11)), block_size=4, pad_id=0)
    assert len(blocks) == 3
    assert blocks.input_ids[2].tolist() == [9, 10, 0, 0]
    assert blocks.attention_mask[2].tolist() == [1, 1, 0, 0]
    assert blocks.labels[2].tolist() == [9, 10, IGNORE_INDEX, IGNORE_INDEX]
    assert blocks[0]["labels"].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (f"\n{SEPARATOR}\n  \n{SEPARATOR}\n".encode(), "is empty"),
        (b"caf\xe9 au lait\n", "not UTF-8"),
    ],
    ids=["missing", "empty", "only-separators", "latin-1"],
)
def test_bad_corpus_file_is_refused_with_a_message(tmp_path: Path, content: bytes | None, message: str) -> None:
    """Each unusable file names itself and what is wrong."""
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TrainingError, match=message) as info:
        read_corpus(path, "training")
    assert "training file" in info.value.message


def test_corpus_smaller_than_one_block_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Fewer tokens than one block cannot train; the message suggests --block-size."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    corpus = read_corpus(write_corpus(tmp_path / "t.txt", ["A fox."]), "training")
    with pytest.raises(TrainingError, match="fewer than one block of 64.*--block-size"):
        build_blocks(corpus, "training", tokenizer, block_size=64)
