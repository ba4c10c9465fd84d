"""`python -m model.training`: fine-tune GPT-2, or train a GPT-2-architecture model from scratch.

    python -m model.training --base gpt2 --train train.txt --eval eval.txt --out models/my-gpt2
    python -m model.training --from-scratch --size small --train train.txt --eval eval.txt --out models/tales

The Hugging Face `Trainer` does the work (progress bar, periodic evaluation, checkpoints, early
stopping on eval loss, mixed precision, several GPUs under `accelerate launch` or `torchrun`).
Everything is written in `<out>.partial/` next to the output and renamed into place at the end,
so `--out` is either absent or complete; an interrupted run keeps its checkpoints there for
`--resume`. Bad input is refused before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    default_data_collator,
    set_seed,
)
from transformers import logging as hf_logging
from transformers.trainer_utils import get_last_checkpoint

from model.loading import DTYPES, explain_load_failure
from model.training.corpus import BlockDataset, CorpusFile, build_blocks, read_corpus, separator_id
from model.training.distill import DistillationTrainer, load_teacher
from model.training.errors import TrainingError
from model.training.model_card import CardFacts, write_model_card
from model.training.perplexity import EvalResult, evaluate
from model.training.sizes import SIZES
from model.training.tokenizer import train_bpe_tokenizer

BASE_ADVICE = "Give a local GPT-2 directory, or train without a base (--from-scratch)."
DEFAULT_SIZE = "small"
DEFAULT_VOCAB_SIZE = 8192
RUN_FILE = "run.json"
TIME_FILE = "taleweaver_train_seconds.json"


@dataclass(frozen=True)
class TrainResult:
    """What a finished run made; `start_step` is above 0 when it resumed from a checkpoint."""

    out_dir: Path
    start_step: int
    steps: int
    train_seconds: float
    eval_before: EvalResult
    eval_after: EvalResult
    stop_reason: str | None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.training",
        description="Fine-tune GPT-2 (--base) or train a GPT-2-architecture model from scratch "
        "(--from-scratch) on a text file; documents are separated by lines holding "
        "only <|endoftext|>.",
    )
    io = parser.add_argument_group("files")
    io.add_argument("--train", required=True, metavar="FILE", help="UTF-8 text to train on")
    io.add_argument("--eval", required=True, metavar="FILE", help="UTF-8 text to evaluate on")
    io.add_argument("--out", required=True, metavar="DIR", help="directory to write the model in")
    io.add_argument(
        "--overwrite", action="store_true", help="replace --out if it exists (only once training has succeeded)"
    )
    io.add_argument(
        "--resume", action="store_true", help="continue an interrupted run (same command) from its latest checkpoint"
    )

    source = parser.add_argument_group("model")
    which = source.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--base",
        metavar="NAME_OR_DIR",
        help="pretrained model to fine-tune: gpt2, distilgpt2 or a local GPT-2 directory",
    )
    which.add_argument(
        "--from-scratch",
        action="store_true",
        help="a new model of --size with a byte-level BPE tokenizer trained on --train",
    )
    source.add_argument(
        "--size",
        choices=list(SIZES),
        help=f"shape for --from-scratch (default {DEFAULT_SIZE}): "
        + "; ".join(f"{k}: {v.description}" for k, v in SIZES.items()),
    )
    source.add_argument(
        "--vocab-size", type=int, help=f"tokenizer size for --from-scratch (default {DEFAULT_VOCAB_SIZE})"
    )
    source.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="for --from-scratch: use this tokenizer (a teacher's, for --teacher) instead of training a BPE",
    )
    source.add_argument("--dropout", type=float, help="dropout for --from-scratch (default 0.1)")

    teach = parser.add_argument_group("distillation (soft targets from a teacher with the same vocabulary)")
    teach.add_argument("--teacher", metavar="DIR", help="a model whose next-token distributions the student learns")
    teach.add_argument(
        "--distill-weight", type=float, default=0.5, help="share of the loss from the teacher (0–1, default 0.5)"
    )
    teach.add_argument("--distill-temperature", type=float, default=1.0, help="softening of both distributions")
    source.add_argument("--block-size", type=int, help="tokens per training block (default: the model's context)")

    run = parser.add_argument_group("training")
    run.add_argument("--epochs", type=float, default=3.0)
    run.add_argument("--max-steps", type=int, default=-1, help="optimizer steps; overrides --epochs")
    run.add_argument(
        "--max-minutes", type=float, help="safety stop after this much training time (the schedule is not shortened)"
    )
    run.add_argument("--batch-size", type=int, default=8, help="blocks per device per step")
    run.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    run.add_argument("--lr", type=float, help="peak learning rate (default: 5e-5 with --base, 1e-3 from scratch)")
    run.add_argument("--warmup", type=float, default=0.05, help="warm-up: a fraction of the steps, or a step count")
    run.add_argument("--weight-decay", type=float, default=0.1)
    run.add_argument(
        "--eval-steps",
        type=float,
        default=0.1,
        help="evaluate and checkpoint every N steps (below 1: that fraction of the run)",
    )
    run.add_argument(
        "--patience",
        type=int,
        default=3,
        help="stop after this many evaluations without a lower eval loss; 0 never stops early",
    )
    run.add_argument("--logging-steps", type=float, default=0.02)
    run.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="mixed precision: auto is bf16 (or fp16) on a GPU, bf16 on a CPU that has it, else fp32",
    )
    run.add_argument(
        "--save-dtype",
        choices=sorted(DTYPES),
        default="float32",
        help="dtype of the saved weights (float16 halves the file; loads back as float32)",
    )
    run.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    run.add_argument("--seed", type=int, default=42)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = build_parser().parse_args(argv)
    hf_logging.set_verbosity_warning()
    try:
        result = run(options, command=_command_line(argv))
    except TrainingError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\nInterrupted. Checkpoints, if any, are in `{work_dir_for(Path(options.out))}`; "
            "run the same command with --resume to continue.",
            file=sys.stderr,
        )
        return 130
    if result is not None:
        print(
            f"Wrote {result.out_dir}: eval perplexity {result.eval_before.perplexity:.2f} -> "
            f"{result.eval_after.perplexity:.2f} after {result.steps} steps "
            f"({result.train_seconds / 60:.1f} min)."
        )
    return 0


@dataclass
class _Plan:
    """A checked run: its data, model and arguments, ready to train."""

    out: Path
    work: Path
    resume_from: Path | None
    train_corpus: CorpusFile
    eval_corpus: CorpusFile
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    block_size: int
    train_blocks: BlockDataset
    eval_blocks: BlockDataset
    precision: str
    record: dict[str, object]
    teacher: PreTrainedModel | None


def run(
    options: argparse.Namespace, command: str = "", callbacks: Sequence[TrainerCallback] = ()
) -> TrainResult | None:
    """Check the input, train, and put the finished model at `options.out`.

    Returns None on every process but the main one of a multi-process run.
    """
    if options.threads:
        torch.set_num_threads(options.threads)
    plan = _plan(options)
    args = _training_arguments(options, plan.work, plan.precision)
    main_process = args.process_index == 0
    with args.main_process_first(local=False, desc="creating the work directory"):
        if main_process and not plan.resume_from:
            _make_work_dir(plan.work, options.overwrite)
            plan.tokenizer.save_pretrained(plan.work / "tokenizer")
    earlier_seconds = _checkpoint_seconds(plan.resume_from) if plan.resume_from else 0.0
    clock = TrainingClock(options.max_minutes, earlier_seconds)
    all_callbacks = [*callbacks, clock]
    if options.patience > 0:
        all_callbacks.append(EarlyStoppingCallback(early_stopping_patience=options.patience))
    trainer_class, extra = Trainer, {}
    if plan.teacher is not None:
        trainer_class = DistillationTrainer
        extra = {
            "teacher": plan.teacher,
            "weight": options.distill_weight,
            "temperature": options.distill_temperature,
        }
    trainer = trainer_class(
        **extra,
        model=plan.model,
        args=args,
        data_collator=default_data_collator,
        train_dataset=plan.train_blocks,
        eval_dataset=plan.eval_blocks,
        processing_class=plan.tokenizer,
        callbacks=all_callbacks,
    )
    eval_before = _eval_before(trainer, plan, options.batch_size) if main_process else None

    start_step = _checkpoint_step(plan.resume_from) if plan.resume_from else 0
    resume = str(plan.resume_from) if plan.resume_from else None
    train_seconds = earlier_seconds + trainer.train(resume_from_checkpoint=resume).metrics["train_runtime"]
    if not main_process or eval_before is None:
        return None
    eval_after = evaluate(trainer.model, plan.eval_blocks, options.batch_size)
    _print_eval("after training", eval_after)

    state = trainer.state
    stop_reason = None
    if state.global_step < state.max_steps:
        stop_reason = "time limit (--max-minutes)" if clock.ran_out else "early stopping: eval loss stopped improving"
    result = TrainResult(
        out_dir=plan.out,
        start_step=start_step,
        steps=state.global_step,
        train_seconds=train_seconds,
        eval_before=eval_before,
        eval_after=eval_after,
        stop_reason=stop_reason,
    )
    _save(trainer, plan, options, result, command)
    return result


def _plan(options: argparse.Namespace) -> _Plan:
    """Every check that can fail on bad input, before anything is written."""
    _check_options(options)
    train_corpus = read_corpus(options.train, "training")
    eval_corpus = read_corpus(options.eval, "evaluation")
    out = Path(options.out)
    work = work_dir_for(out)
    resume_from = _check_output(out, work, options)
    record = _run_record(options, train_corpus, eval_corpus)
    if resume_from:
        _check_same_run(work, record)
    precision = _resolve_precision(options.precision)
    set_seed(options.seed)
    tokenizer, model = _prepare_model(options, train_corpus, work if resume_from else None)
    teacher = load_teacher(options.teacher, tokenizer) if options.teacher else None
    block_size = _block_size(options, model)
    return _Plan(
        out=out,
        work=work,
        resume_from=resume_from,
        train_corpus=train_corpus,
        eval_corpus=eval_corpus,
        tokenizer=tokenizer,
        model=model,
        block_size=block_size,
        train_blocks=build_blocks(train_corpus, "training", tokenizer, block_size),
        eval_blocks=build_blocks(eval_corpus, "evaluation", tokenizer, block_size),
        precision=precision,
        record=record,
        teacher=teacher,
    )


def _eval_before(trainer: Trainer, plan: _Plan, batch_size: int) -> EvalResult:
    """Evaluate the untrained model, or read what the interrupted run measured."""
    run_file = plan.work / RUN_FILE
    if plan.resume_from:
        saved = json.loads(run_file.read_text(encoding="utf-8"))["eval_before"]
        return EvalResult(loss=saved["loss"], tokens=saved["tokens"])
    result = evaluate(trainer.model, plan.eval_blocks, batch_size)
    _print_eval("before training", result)
    record = {**plan.record, "eval_before": {"loss": result.loss, "tokens": result.tokens}}
    run_file.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return result


def _save(trainer: Trainer, plan: _Plan, options: argparse.Namespace, result: TrainResult, command: str) -> None:
    """Write weights, tokenizer and model card in the work directory, then rename it to `out`."""
    final = plan.work / "final"
    if final.exists():
        shutil.rmtree(final)
    model = trainer.model
    model.config.use_cache = True  # the Trainer turns the KV cache off for training; generation needs it
    n_parameters = sum(p.numel() for p in model.parameters())
    save_dtype = DTYPES[options.save_dtype]
    model.to(save_dtype).save_pretrained(final)
    if save_dtype != torch.float32:
        _ask_for_float32_on_load(final)
    plan.tokenizer.save_pretrained(final)
    config = model.config
    write_model_card(
        final,
        CardFacts(
            name=str(plan.out),
            base=options.base,
            size=options.size,
            size_description=SIZES[options.size].description if options.size else None,
            parameters=n_parameters,
            n_layer=config.n_layer,
            n_embd=config.n_embd,
            n_head=config.n_head,
            n_positions=config.n_positions,
            vocab_size=config.vocab_size,
            train=plan.train_corpus,
            eval=plan.eval_corpus,
            train_tokens=plan.train_blocks.n_tokens,
            block_size=plan.block_size,
            steps=result.steps,
            epochs=trainer.state.epoch or 0.0,
            train_seconds=result.train_seconds,
            stop_reason=result.stop_reason,
            eval_before=result.eval_before,
            eval_after=result.eval_after,
            hyperparameters=_hyperparameters(trainer.args, options, plan.block_size),
            device=_describe_device(trainer.args),
            precision=plan.precision,
            saved_dtype=options.save_dtype,
            weights_mb=sum(p.stat().st_size for p in final.glob("*.safetensors")) / 1e6,
            command=command or "python -m model.training",
        ),
    )
    _move_into_place(final, plan.out)
    shutil.rmtree(plan.work)


def work_dir_for(out: Path) -> Path:
    """Where a run writes before its output is complete: next to `out`, so the rename is atomic."""
    return out.parent / f"{out.name}.partial"


class TrainingClock(TrainerCallback):
    """Records the training time in each checkpoint (so a resumed run reports its whole time),
    and stops training after `max_minutes` in all, with a last evaluation and checkpoint."""

    def __init__(self, max_minutes: float | None, earlier_seconds: float = 0.0) -> None:
        self.max_seconds = max_minutes * 60 if max_minutes else None
        self.earlier_seconds = earlier_seconds
        self.started = time.monotonic()
        self.ran_out = False

    def elapsed(self) -> float:
        return self.earlier_seconds + time.monotonic() - self.started

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self.started = time.monotonic()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        if self.max_seconds is not None and self.elapsed() > self.max_seconds:
            self.ran_out = True
            control.should_training_stop = True
            control.should_evaluate = True
            control.should_save = True

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir():
            (checkpoint / TIME_FILE).write_text(json.dumps({"seconds": self.elapsed()}))


def _check_options(options: argparse.Namespace) -> None:
    """Refuse inconsistent options and fill in the --from-scratch defaults."""
    scratch_only = [
        f"--{name}" for name in ("size", "vocab_size", "dropout", "tokenizer") if getattr(options, name) is not None
    ]
    if options.base is not None and scratch_only:
        raise TrainingError(
            f"{', '.join(scratch_only).replace('_', '-')} apply only to --from-scratch; "
            "a --base brings its own shape and tokenizer."
        )
    if options.from_scratch:
        options.size = options.size or DEFAULT_SIZE
        options.vocab_size = options.vocab_size or DEFAULT_VOCAB_SIZE
        options.dropout = 0.1 if options.dropout is None else options.dropout
        if options.vocab_size < 257:
            raise TrainingError("--vocab-size must be above 256: byte-level BPE starts from the 256 bytes.")
    if not 0 <= options.distill_weight <= 1 or options.distill_temperature <= 0:
        raise TrainingError("--distill-weight must lie in 0–1 and --distill-temperature above 0.")
    if options.block_size is not None and options.block_size < 2:
        raise TrainingError("--block-size must be at least 2 tokens.")
    for name in ("batch_size", "grad_accum"):
        if getattr(options, name) < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be at least 1.")
    if not Path(options.out).name:
        raise TrainingError(f"--out `{options.out}` must name a directory to create.")


def _check_output(out: Path, work: Path, options: argparse.Namespace) -> Path | None:
    """Refuse to clobber; return the checkpoint to resume from, if `--resume`."""
    if out.exists() and not out.is_dir():
        raise TrainingError(f"`{out}` exists and is not a directory.")
    if out.exists() and not options.overwrite:
        raise TrainingError(
            f"The output directory `{out}` already exists; pass --overwrite to replace it "
            "(it is replaced only once training has succeeded)."
        )
    if not options.resume:
        # Under torchrun the main process may already have made `work` while another one checks.
        if work.exists() and not options.overwrite and os.environ.get("RANK", "0") == "0":
            raise TrainingError(
                f"`{work}` holds an earlier run that did not finish: pass --resume to "
                "continue it, or --overwrite to start again."
            )
        return None
    last = get_last_checkpoint(str(work / "checkpoints")) if (work / "checkpoints").is_dir() else None
    if last is None:
        raise TrainingError(f"Nothing to resume: no checkpoint in `{work / 'checkpoints'}`.")
    return Path(last)


def _run_record(options: argparse.Namespace, train: CorpusFile, eval_: CorpusFile) -> dict[str, object]:
    """What must not change between a run and its `--resume`."""
    return {
        "train_sha256": train.sha256,
        "eval_sha256": eval_.sha256,
        "base": options.base,
        "size": None if options.base else options.size,
        "vocab_size": None if options.base else options.vocab_size,
        "tokenizer": options.tokenizer,
        "teacher": options.teacher,
        "block_size": options.block_size,
    }


def _check_same_run(work: Path, record: dict[str, object]) -> None:
    try:
        saved = json.loads((work / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainingError(f"Cannot resume: `{work / RUN_FILE}` is missing or unreadable.") from exc
    changed = [key for key, value in record.items() if saved.get(key) != value]
    if changed:
        raise TrainingError(
            f"Cannot resume: {', '.join(changed)} differ from the interrupted run; "
            "use the same files and model options, or start again with --overwrite."
        )


def _prepare_model(
    options: argparse.Namespace, train: CorpusFile, resume_work: Path | None
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    if options.base is not None:
        return _load_base(options.base)
    size = SIZES[options.size]
    if resume_work is not None:
        tokenizer = AutoTokenizer.from_pretrained(resume_work / "tokenizer")
    elif options.tokenizer:
        tokenizer = _load_tokenizer(options.tokenizer)
    else:
        print(f"Training a byte-level BPE tokenizer ({options.vocab_size} tokens) on {train.path} ...")
        tokenizer = train_bpe_tokenizer(train.documents, options.vocab_size, size.n_positions)
    sep = separator_id(tokenizer)
    config = size.config(vocab_size=len(tokenizer), eos_token_id=sep, dropout=options.dropout)
    model = AutoModelForCausalLM.from_config(config)
    return tokenizer, model


def _load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"Cannot load the tokenizer in `{path}`: {exc}") from exc
    if len(tokenizer) < 2:
        raise TrainingError(f"`{path}` holds no tokenizer files (tokenizer.json).")
    return tokenizer


def _load_base(base: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise TrainingError(explain_load_failure(base, exc, role="base model", advice=BASE_ADVICE)) from exc
    if model.config.model_type != "gpt2":
        raise TrainingError(
            f"`{base}` is a `{model.config.model_type}` model; Taleweaver trains GPT-2-architecture "
            "models only (gpt2, distilgpt2 or a local GPT-2 directory)."
        )
    return tokenizer, model


def _block_size(options: argparse.Namespace, model: PreTrainedModel) -> int:
    context = model.config.n_positions
    block = options.block_size or min(context, 1024)
    if block > context:
        raise TrainingError(f"--block-size {block} is longer than the model's context of {context} tokens.")
    return block


def _resolve_precision(name: str) -> str:
    cuda = torch.cuda.is_available()
    if name == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if _on_mps():
            return "fp32"
        # oneDNN's bf16 kernels (AVX-512 BF16 or AMX) make CPU training about twice as fast.
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    if name == "fp16" and not cuda:
        raise TrainingError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU.")
    return name


def _on_mps() -> bool:
    return not torch.cuda.is_available() and torch.backends.mps.is_available()


def _training_arguments(options: argparse.Namespace, work: Path, precision: str) -> TrainingArguments:
    lr = options.lr if options.lr is not None else (5e-5 if options.base else 1e-3)
    return TrainingArguments(
        output_dir=str(work / "checkpoints"),
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        num_train_epochs=options.epochs,
        max_steps=options.max_steps,
        learning_rate=lr,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        warmup_steps=options.warmup,
        weight_decay=options.weight_decay,
        eval_strategy="steps",
        eval_steps=options.eval_steps,
        save_strategy="steps",
        save_steps=options.eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=options.logging_steps,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=options.seed,
        report_to="none",
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available() and not _on_mps(),
    )


def _hyperparameters(args: TrainingArguments, options: argparse.Namespace, block_size: int) -> dict[str, object]:
    warmup = f"{args.warmup_steps:.0%} of steps" if args.warmup_steps < 1 else f"{args.warmup_steps:g} steps"
    values: dict[str, object] = {
        "block size": block_size,
        "batch": f"{args.per_device_train_batch_size} blocks × {args.gradient_accumulation_steps} accumulation "
        f"× {args.world_size} device(s)",
        "learning rate": f"{args.learning_rate:g} peak, cosine to 10 %, warm-up {warmup}",
        "weight decay": args.weight_decay,
        "early stopping patience": options.patience or "off",
        "seed": args.seed,
    }
    if options.from_scratch:
        values["dropout"] = options.dropout
        values["tokenizer"] = (
            f"`{options.tokenizer}`"
            if options.tokenizer
            else f"byte-level BPE, {options.vocab_size} tokens, trained on the training file"
        )
    if options.teacher:
        values["teacher (soft targets)"] = (
            f"`{options.teacher}`, weight {options.distill_weight:g}, temperature {options.distill_temperature:g}"
        )
    return values


def _describe_device(args: TrainingArguments) -> str:
    if args.device.type == "cuda":
        return f"{args.world_size} × {torch.cuda.get_device_name(args.device)}"
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'s' if threads > 1 else ''})"


def _make_work_dir(work: Path, overwrite: bool) -> None:
    if work.exists() and overwrite:
        shutil.rmtree(work)
    try:
        work.mkdir(parents=True)
    except OSError as exc:
        raise TrainingError(f"Cannot create `{work}` next to the output directory: {exc.strerror}.") from exc


def _ask_for_float32_on_load(model_dir: Path) -> None:
    """Half-precision weights halve the file, but a CPU should compute in float32: the config's
    dtype is what `from_pretrained(dtype="auto")` (the default) loads as."""
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _move_into_place(final: Path, out: Path) -> None:
    """Rename the finished directory to `out`, replacing an old one only now that training succeeded."""
    old = final.parent / "previous"
    if out.exists():
        out.rename(old)
    final.rename(out)
    if old.exists():
        shutil.rmtree(old)


def _checkpoint_step(checkpoint: Path) -> int:
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    return int(state["global_step"])


def _checkpoint_seconds(checkpoint: Path) -> float:
    try:
        return float(json.loads((checkpoint / TIME_FILE).read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        return 0.0


def _print_eval(label: str, result: EvalResult) -> None:
    print(
        f"Eval {label}: loss {result.loss:.4f}, perplexity {result.perplexity:.2f} ({result.tokens:,} tokens)",
        flush=True,
    )


def _command_line(argv: Sequence[str]) -> str:
    return "python -m model.training " + shlex.join(argv)


if __name__ == "__main__":
    sys.exit(main())
