"""`python -m model.training`: it learns, resumes, refuses bad input, and writes a loadable model."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import AutoModelForCausalLM, TrainerCallback

from model.loading import explain_load_failure, load_model
from model.training.corpus import build_blocks, read_corpus
from model.training.perplexity import evaluate
from model.training.tokenizer import train_bpe_tokenizer
from model.training.train import TrainResult, build_parser, main, run, work_dir_for

SENTENCES = [
    "Once upon a time there lived a king who had three daughters.",
    "The fox said to the crow: what a fine voice you have.",
    "Holmes looked at the letter and said nothing for a long while.",
    "The little mermaid swam up to the surface and saw the ship.",
]
SEPARATOR_LINE = "\n<|endoftext|>\n"


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    """A training and an evaluation file in the corpus format, written by the test."""
    data = tmp_path / "data"
    data.mkdir()
    train, eval_ = data / "train.txt", data / "eval.txt"
    stories = [" ".join(SENTENCES[i:] + SENTENCES[:i]) for i in range(4)]
    train.write_text(SEPARATOR_LINE.join(stories * 3), encoding="utf-8")
    eval_.write_text(SEPARATOR_LINE.join(reversed(stories)), encoding="utf-8")
    return train, eval_


def train_args(train: Path, eval_: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--train",
        str(train),
        "--eval",
        str(eval_),
        "--out",
        str(out),
        "--precision",
        "fp32",
        "--block-size",
        "32",
        "--batch-size",
        "4",
        "--logging-steps",
        "5",
        *extra,
    ]


def run_training(argv: list[str], callbacks: list[TrainerCallback] | None = None) -> TrainResult:
    result = run(build_parser().parse_args(argv), command="test", callbacks=callbacks or [])
    assert result is not None
    return result


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_fine_tuning_lowers_the_eval_loss(tiny_model_dir: Path, corpus: tuple[Path, Path], tmp_path: Path) -> None:
    """A few steps on a small text cut the eval loss of the tiny GPT-2 by more than a third."""
    out = tmp_path / "tuned"
    result = run_training(
        train_args(
            *corpus, out, "--base", str(tiny_model_dir), "--max-steps", "30", "--lr", "1e-2", "--eval-steps", "10"
        )
    )
    assert result.steps == 30
    assert result.eval_after.loss < 0.67 * result.eval_before.loss
    assert result.eval_after.perplexity < result.eval_before.perplexity
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "tuned"]


def test_from_scratch_output_round_trips_through_the_bots_loader(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    """A new model with its own BPE tokenizer loads with `load_model`, scores as evaluated, and generates."""
    out = tmp_path / "scratch"
    result = run_training(
        train_args(
            *corpus,
            out,
            "--from-scratch",
            "--size",
            "tiny",
            "--vocab-size",
            "300",
            "--max-steps",
            "20",
            "--eval-steps",
            "10",
        )
    )
    assert result.eval_after.loss < result.eval_before.loss
    loaded = load_model(out, device="cpu", dtype="float32")
    assert loaded.tokenizer.eos_token == "<|endoftext|>"
    assert loaded.model.config.eos_token_id == loaded.tokenizer.eos_token_id
    assert loaded.model.config.use_cache is True
    text = "The fox said to the crow"
    assert loaded.tokenizer.decode(loaded.tokenizer(text)["input_ids"]) == text
    ids = loaded.tokenizer(text, return_tensors="pt")
    generated = loaded.model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > ids["input_ids"].shape[1]
    eval_blocks = build_blocks(read_corpus(corpus[1], "evaluation"), "evaluation", loaded.tokenizer, 32)
    assert evaluate(loaded.model, eval_blocks).loss == pytest.approx(result.eval_after.loss, rel=1e-5)


def test_model_card_records_base_corpus_hashes_steps_and_command(
    tiny_model_dir: Path, corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    """README.md in the output says where the model came from and how well it does."""
    out = tmp_path / "tuned"
    result = run_training(train_args(*corpus, out, "--base", str(tiny_model_dir), "--max-steps", "4"))
    card = (out / "README.md").read_text(encoding="utf-8")
    for path in corpus:
        assert hashlib.sha256(path.read_bytes()).hexdigest() in card
    assert f"fine-tuned from `{tiny_model_dir}`" in card
    assert "4 steps" in card
    assert f"{result.eval_after.perplexity:.2f}" in card
    assert "```sh\ntest\n```" in card


def test_half_precision_weights_load_back_as_float32(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    """--save-dtype float16 halves the file, and the default `from_pretrained` still computes in float32."""
    out = tmp_path / "half"
    run_training(
        train_args(
            *corpus,
            out,
            "--from-scratch",
            "--size",
            "tiny",
            "--vocab-size",
            "300",
            "--max-steps",
            "2",
            "--save-dtype",
            "float16",
        )
    )
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.float32
    assert load_model(out, device="cpu", dtype="float32").dtype == torch.float32


class InterruptAt(TrainerCallback):
    """Stands in for Ctrl-C at a given step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_resume_continues_the_step_count(tiny_model_dir: Path, corpus: tuple[Path, Path], tmp_path: Path) -> None:
    """Interrupted after the checkpoint at step 4, `--resume` goes on from step 4 to the planned 8."""
    out = tmp_path / "tuned"
    argv = train_args(*corpus, out, "--base", str(tiny_model_dir), "--max-steps", "8", "--eval-steps", "4")
    with pytest.raises(KeyboardInterrupt):
        run_training(argv, callbacks=[InterruptAt(6)])
    assert not out.exists()
    assert (work_dir_for(out) / "checkpoints" / "checkpoint-4").is_dir()

    result = run_training([*argv, "--resume"])
    assert (result.start_step, result.steps) == (4, 8)
    assert "8 steps" in (out / "README.md").read_text(encoding="utf-8")
    assert not work_dir_for(out).exists()


def test_unfinished_run_is_not_silently_restarted(
    tiny_model_dir: Path, corpus: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With checkpoints of an interrupted run next to --out, a new run asks for --resume or --overwrite."""
    out = tmp_path / "tuned"
    argv = train_args(*corpus, out, "--base", str(tiny_model_dir), "--max-steps", "4", "--eval-steps", "2")
    with pytest.raises(KeyboardInterrupt):
        run_training(argv, callbacks=[InterruptAt(3)])
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_without_checkpoint_is_refused(
    tiny_model_dir: Path, corpus: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--resume with nothing to resume from says so."""
    out = tmp_path / "tuned"
    assert main(train_args(*corpus, out, "--base", str(tiny_model_dir), "--resume")) == 2
    assert "Nothing to resume" in capsys.readouterr().err


BAD_INPUTS = {
    "missing train file": (lambda t, e, d: ["--train", str(d / "nope.txt")], "training file .* does not exist"),
    "empty eval file": (lambda t, e, d: ["--eval", str(_write(d / "empty.txt", ""))], "evaluation file .* is empty"),
    "corpus smaller than one block": (
        lambda t, e, d: ["--train", str(_write(d / "short.txt", "A fox."))],
        "fewer than one block",
    ),
    "output exists": (lambda t, e, d: ["--out", str(_mkdir(d / "taken"))], "already exists.*--overwrite"),
    "base cannot be loaded": (
        lambda t, e, d: ["--base", str(_mkdir(d / "not-a-model"))],
        "Could not load the base model",
    ),
    "hub switched off": (lambda t, e, d: ["--base", "gpt2"], "hub is off"),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_its_message_and_writes_nothing(
    case: str,
    tiny_model_dir: Path,
    corpus: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exit status 2, one readable line (no traceback), and the directory is left as it was."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_args, message = BAD_INPUTS[case]
    override = make_args(*corpus, tmp_path)
    defaults = {"--base": str(tiny_model_dir), "--out": str(tmp_path / "model")}
    argv = train_args(*corpus, tmp_path / "model", "--max-steps", "2")
    for flag, value in {**defaults, **dict(zip(override[::2], override[1::2], strict=True))}.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    before = listing(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("error: ")
    assert re.search(message, last_line), err
    assert listing(tmp_path) == before


def test_unreachable_hub_is_named_as_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the download fails for want of a connection, the message says the hub is unreachable."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    try:
        try:
            raise ConnectionError("[Errno -2] Name or service not known")
        except ConnectionError as cause:
            raise LocalEntryNotFoundError("cannot find the requested files in the local cache") from cause
    except LocalEntryNotFoundError as error:
        wrapped = OSError("We couldn't connect to 'https://huggingface.co' to load the files")
        wrapped.__cause__ = error
    assert "hub is unreachable" in explain_load_failure("distilgpt2", wrapped)
    assert "hub is unreachable" not in explain_load_failure("distilgpt2", OSError("401 Unauthorized"))


def test_bpe_tokenizer_round_trips_any_text() -> None:
    """Byte-level BPE has no unknown token: unseen characters come back byte for byte."""
    tokenizer = train_bpe_tokenizer(SENTENCES * 5, vocab_size=300, model_max_length=64)
    text = "Märchen — «the fox» 狐 said: 🦊!"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == tokenizer.eos_token_id == 0
