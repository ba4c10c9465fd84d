"""The llama2.c teacher: read as run.c reads it, converted to transformers, and used by a student."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from model.loading import load_model
from model.training import llama2c
from model.training.distill import distillation_loss
from model.training.errors import TrainingError
from model.training.synthesize import synthesize
from model.training.teacher import convert
from model.training.train import main as train_main
from tests.tiny_llama2c import build_tiny_llama2c

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"
TEXTS = [
    "once there was a day",
    "Once upon a time, there was a little girl named Lily.",
    "the  day é was  there!\nOn, a day.",
    'She said, "Hi!" — “quoted” 3 ünïcödé 😀',
    "",
]


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("llama2c")
    checkpoint, tokenizer = build_tiny_llama2c(folder)
    return checkpoint, tokenizer, convert(checkpoint, tokenizer, folder / "teacher")


def test_converted_model_gives_run_c_logits(tiny_teacher: tuple[Path, Path, Path]) -> None:
    """The rotary permutation is right: the logits equal the direct forward pass to 1e-4."""
    checkpoint_path, tokenizer_path, teacher = tiny_teacher
    checkpoint = llama2c.read_checkpoint(checkpoint_path)
    vocab = llama2c.read_vocab(tokenizer_path, checkpoint.config.vocab_size)
    tokens = [1, *llama2c.encode(vocab, "once there was a day, the end.")]
    reference = llama2c.forward(checkpoint, tokens)
    model = AutoModelForCausalLM.from_pretrained(teacher)
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0].double()
    assert reference.abs().max() > 1.0  # not trivially small
    assert (logits - reference).abs().max().item() < 1e-4


def test_without_the_rotary_permutation_the_logits_differ(tiny_teacher: tuple[Path, Path, Path]) -> None:
    """The test above can fail: run.c's pairs read as halves give other logits."""
    checkpoint_path, tokenizer_path, _ = tiny_teacher
    checkpoint = llama2c.read_checkpoint(checkpoint_path)
    vocab = llama2c.read_vocab(tokenizer_path, checkpoint.config.vocab_size)
    tokens = [1, *llama2c.encode(vocab, "once there was a day")]
    from model.training import teacher as teacher_module

    unpermuted = teacher_module.to_transformers(checkpoint)
    for layer, block in enumerate(unpermuted.model.layers):
        block.self_attn.q_proj.weight.data = checkpoint.weights["wq"][layer].clone()
        block.self_attn.k_proj.weight.data = checkpoint.weights["wk"][layer].clone()
    with torch.no_grad():
        logits = unpermuted(torch.tensor([tokens])).logits[0].double()
    assert (logits - llama2c.forward(checkpoint, tokens)).abs().max().item() > 1e-3


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_encodes_as_run_c_and_round_trips(tiny_teacher: tuple[Path, Path, Path], text: str) -> None:
    _, tokenizer_path, teacher = tiny_teacher
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    vocab = llama2c.read_vocab(tokenizer_path)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == llama2c.encode(vocab, text)
    # llama2.c's dummy space stays in front, as a continuation's spaces stay in front of it.
    assert tokenizer.decode(ids) == (" " + text if text else "")


def test_tokenizer_separator_is_the_start_of_story_token(tiny_teacher: tuple[Path, Path, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher[2])
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == 1 == tokenizer.eos_token_id == tokenizer.pad_token_id
    # Typed by a user, it is text, not the token.
    assert 1 not in tokenizer("<|endoftext|>", split_special_tokens=True)["input_ids"]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/models/stories260K is not on this machine")
def test_stories260k_converts_exactly(tmp_path: Path) -> None:
    checkpoint = llama2c.read_checkpoint(SHARED / "stories260K.bin")
    vocab = llama2c.read_vocab(SHARED / "tok512.bin", checkpoint.config.vocab_size)
    teacher = convert(SHARED / "stories260K.bin", SHARED / "tok512.bin", tmp_path / "teacher")
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    text = "Once upon a time, there was a little girl named Lily. She loved to play outside."
    tokens = [1, *llama2c.encode(vocab, text)]
    assert tokens[1:] == tokenizer(text, add_special_tokens=False)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(teacher)
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0].double()
    assert (logits - llama2c.forward(checkpoint, tokens)).abs().max().item() < 1e-4


def test_truncated_checkpoint_is_refused(tmp_path: Path, tiny_teacher: tuple[Path, Path, Path]) -> None:
    broken = tmp_path / "broken.bin"
    broken.write_bytes(tiny_teacher[0].read_bytes()[:-100])
    with pytest.raises(TrainingError, match="truncated"):
        llama2c.read_checkpoint(broken)


def test_distillation_loss_is_zero_only_when_the_distributions_agree() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.ones(2, 5, dtype=torch.long)
    assert distillation_loss(logits, logits.clone(), labels, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(logits, torch.randn(2, 5, 11), labels, 2.0).item() > 0.1
    # Positions without a label (padding) do not count.
    labels[:, 3:] = -100
    other = logits.clone()
    other[:, 3:] = torch.randn(2, 2, 11)
    assert distillation_loss(logits, other, labels, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def corpus_files(folder: Path) -> tuple[Path, Path]:
    stories = ["once there was a day.", "the day was a day, once.", "there was a day! the end."]
    train, eval_ = folder / "train.txt", folder / "eval.txt"
    train.write_text("\n<|endoftext|>\n".join(stories * 6) + "\n")
    eval_.write_text("\n<|endoftext|>\n".join(stories) + "\n")
    return train, eval_


def test_student_learns_from_the_teacher_and_loads_in_the_bot(
    tiny_teacher: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A GPT-2 student on the teacher's vocabulary trains with soft targets and loads like any model."""
    teacher = tiny_teacher[2]
    train, eval_ = corpus_files(tmp_path)
    out = tmp_path / "student"
    argv = ["--from-scratch", "--size", "tiny", "--tokenizer", str(teacher), "--teacher", str(teacher)]
    argv += ["--train", str(train), "--eval", str(eval_), "--out", str(out), "--precision", "fp32"]
    argv += ["--max-steps", "6", "--batch-size", "2", "--block-size", "16", "--eval-steps", "3", "--patience", "0"]
    assert train_main(argv) == 0
    loaded = load_model(out, device="cpu")
    assert loaded.model.config.model_type == "gpt2"
    assert loaded.tokenizer.get_vocab() == AutoTokenizer.from_pretrained(teacher).get_vocab()
    assert "teacher (soft targets)" in (out / "README.md").read_text()


def test_a_teacher_with_another_vocabulary_is_refused(
    tiny_teacher: tuple[Path, Path, Path], tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    train, eval_ = corpus_files(tmp_path)
    argv = ["--from-scratch", "--size", "tiny", "--tokenizer", str(tiny_model_dir), "--teacher", str(tiny_teacher[2])]
    argv += ["--train", str(train), "--eval", str(eval_), "--out", str(tmp_path / "s"), "--max-steps", "2"]
    assert train_main(argv) == 2
    assert "another vocabulary" in capsys.readouterr().err


def synth_options(teacher: Path, out: Path, stories: int, batch_size: int, **extra) -> argparse.Namespace:
    values = dict(temperature=1.5, top_k=0, top_p=1.0, seed=5, max_tokens=63, resume=False)
    values.update(extra)
    return argparse.Namespace(teacher=str(teacher), out=str(out), stories=stories, batch_size=batch_size, **values)


def test_each_synthetic_story_has_its_own_seed(tiny_teacher: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Story n is the same whichever batch wrote it; a resumed run writes what one run writes."""
    teacher = tiny_teacher[2]
    one = tmp_path / "one.txt"
    meta = synthesize(synth_options(teacher, one, 12, 12))
    assert meta["attempted"] == 12 and meta["kept"] + meta["dropped"] == 12
    assert 0 < meta["kept"] < 12, "some stories end within the tiny teacher's context, some do not"
    split = tmp_path / "split.txt"
    synthesize(synth_options(teacher, split, 4, 4))
    synthesize(synth_options(teacher, split, 12, 3, resume=True))
    assert split.read_text() == one.read_text()
    with pytest.raises(TrainingError, match="--resume"):
        synthesize(synth_options(teacher, split, 8, 2))
    with pytest.raises(TrainingError, match="other settings"):
        synthesize(synth_options(teacher, split, 8, 2, resume=True, temperature=0.5))
