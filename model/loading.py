"""Loading a GPT-2-architecture model and its tokenizer with `from_pretrained`."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from core.errors import ModelLoadError
from model import lean_layers
from model import precision as precisions
from model.lm_head import slice_lm_head
from model.precision import PrecisionChoice
from model.prepacked import prepack_linears

log = logging.getLogger(__name__)

LOAD_ADVICE = "Point `model.source` in config.yaml at a model directory, or train one with `python -m model.training`."
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_MODES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass
class LoadedModel:
    """A model ready for inference, with the tokenizer and device it belongs to."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    source: str
    precision: PrecisionChoice = PrecisionChoice("fp32", "the model's own dtype")
    """The precision stories are written in, and why (`model.precision`)."""

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def pick_device(device: str = "auto") -> torch.device:
    """`auto` means the GPU when CUDA is there, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("config asks for device `cuda`, but no CUDA GPU is available.")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` means half precision (bf16 when supported, else fp16) on a GPU, fp32 on the CPU."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return DTYPES[dtype]


def load_model(
    source: str | os.PathLike[str],
    device: str = "auto",
    dtype: str = "auto",
    compile: bool = False,
    onednn_linears: bool = True,
    precision: str = "auto",
) -> LoadedModel:
    """Load a local directory or a hub id; frozen, in eval mode, on the chosen device, in the
    precision `model.precision` asks for (`model.precision`: `auto` decides by the model's gate).

    The weights are frozen (`requires_grad_(False)`) because nothing in the bot trains them, and
    autograd through frozen weights costs nothing extra while trainable ones pile up gradients.
    """
    source = str(source)
    if Path(source).is_absolute() and not Path(source).is_dir():
        raise ModelLoadError(
            f"There is no model directory at `{source}`. Train one with `python -m model.training`, "
            "or point `model.source` in config.yaml at a directory or a hub id such as `gpt2`."
        )
    torch_device = pick_device(device)
    choice = pick_precision(precision, dtype, source, torch_device)
    torch_dtype = torch.bfloat16 if choice.mode == "bf16" and dtype == "auto" else pick_dtype(dtype, torch_device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except Exception as exc:  # noqa: BLE001 - any failure here is a broken model, said in one message
        # OSError (missing files), ValueError (wrong architecture, no tokenizer), safetensors'
        # errors (truncated weights), KeyError/TypeError (a config of another library)…
        raise ModelLoadError(explain_load_failure(source, exc, advice=LOAD_ADVICE)) from exc
    check_tokenizer(source, len(tokenizer), model.config.vocab_size)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(torch_device).eval().requires_grad_(False)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    slice_lm_head(model)  # a packed head still falls back to it (gradients, copies, 1–2 rows)
    parameters = model.num_parameters()
    precisions.apply(model, choice.mode, source if Path(source).is_dir() else None)
    lean_layers.apply(model)  # after int8, which replaces the big matrices: only what stays is copied
    if onednn_linears:
        prepack_linears(model)  # fp32 layers only: int8 and bf16 ones keep their own kernels
    if compile:
        model.forward = torch.compile(model.forward, dynamic=True)
    log.info(
        "loaded model %s on %s (%.1fM parameters); precision %s (%s)",
        source,
        torch_device,
        parameters / 1e6,
        choice.mode,
        choice.reason,
    )
    return LoadedModel(model=model, tokenizer=tokenizer, device=torch_device, source=source, precision=choice)


def pick_precision(precision: str, dtype: str, source: str, device: torch.device) -> PrecisionChoice:
    """`model.precision` against `model.dtype`: an explicit dtype (the older key) names the mode when
    precision is `auto`; naming both differently is a mistake said at start."""
    if dtype != "auto":
        mode = DTYPE_MODES[DTYPES[dtype]]
        if precision not in ("auto", mode):
            raise ModelLoadError(
                f"config.yaml asks for `model.precision: {precision}` and `model.dtype: {dtype}`; "
                "set `model.dtype: auto` and choose the precision alone."
            )
        return PrecisionChoice(mode, "model.dtype in config.yaml")
    if device.type == "cuda" and precision == "auto":
        return PrecisionChoice(DTYPE_MODES[pick_dtype("auto", device)], "auto on a GPU")
    try:
        return precisions.choose(precision, source if Path(source).is_dir() else None, device)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc


def check_tokenizer(source: str, tokenizer_size: int, model_vocab_size: int) -> None:
    """`from_pretrained` builds an empty tokenizer, without a word, when its files are missing;
    a tokenizer larger than the model's vocabulary would index past its embeddings."""
    if tokenizer_size < 2:
        raise ModelLoadError(
            f"Could not load the model in `{source}`: its tokenizer files (tokenizer.json, or vocab.json "
            "and merges.txt) are missing."
        )
    if tokenizer_size > model_vocab_size:
        raise ModelLoadError(
            f"Could not load the model in `{source}`: its tokenizer has {tokenizer_size} tokens but the model "
            f"only {model_vocab_size}, so they do not belong together."
        )


def explain_load_failure(source: str, exc: BaseException, *, role: str = "model", advice: str = "") -> str:
    """The one message for a model (or training base) that will not load: whether it is missing
    locally, or the hub is switched off or unreachable, or the files themselves are broken."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    advice = f" {advice}" if advice else ""
    if Path(source).exists():
        return f"Could not load the {role} in `{source}`: {detail}"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return (
            f"`{source}` is not a local directory, and the Hugging Face hub is off (HF_HUB_OFFLINE=1), "
            f"so it cannot be downloaded.{advice}"
        )
    if _is_connection_failure(exc):
        return (
            f"`{source}` is not a local directory, and the Hugging Face hub is unreachable from this "
            f"machine, so it cannot be downloaded.{advice}"
        )
    return (
        f"Could not load `{source}`: it is not a local directory, and the Hugging Face hub could not "
        f"provide it ({detail}).{advice}"
    )


def _is_connection_failure(exc: BaseException) -> bool:
    network_names = {
        "ConnectError",
        "ConnectTimeout",
        "ConnectionError",
        "LocalEntryNotFoundError",
        "OfflineModeIsEnabled",
        "ProxyError",
    }
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionError, TimeoutError, socket.gaierror)):
            return True
        if type(current).__name__ in network_names or "couldn't connect" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False
