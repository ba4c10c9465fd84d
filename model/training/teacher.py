"""`python -m model.training.teacher`: a llama2.c model (stories260K) as a transformers model.

    python -m model.training.teacher --checkpoint ../shared/models/stories260K/stories260K.bin \
        --tokenizer ../shared/models/stories260K/tok512.bin --out data/teacher

The result is a `LlamaForCausalLM` and a fast tokenizer that `from_pretrained` loads, so the
teacher writes stories with `generate` and gives its next-token distributions to a student.

The tokenizer is llama2.c's, written for Hugging Face `tokenizers`: a leading space is added
(llama2.c's dummy prefix), spaces become "▁", pieces merge by their llama2.c score (a merge's rank
is its result's score, so the best-scoring pair merges first, as in run.c), and characters with no
piece fall back to their bytes. Decoding keeps each token's leading space, as GPT-2's byte-level
tokenizer does, so a continuation decodes with its spaces; a whole text decodes with the dummy
space in front. Token 1 (llama2.c's BOS, which starts every story it was trained on) is named
`<|endoftext|>`: it is the separator, bos, eos and pad token, as in GPT-2, so a student with this
vocabulary trains on the project's corpus format unchanged.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, normalizers
from tokenizers.models import BPE
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from model.training.corpus import SEPARATOR
from model.training.errors import TrainingError
from model.training.llama2c import BYTE_OFFSET, Llama2cCheckpoint, Llama2cVocab, read_checkpoint, read_vocab

SPACE = "▁"
SPECIALS = ("<unk>", SEPARATOR, "</s>")


def piece_text(piece: bytes, index: int) -> str:
    """A llama2.c piece as a `tokenizers` vocabulary entry."""
    if index < len(SPECIALS):
        return SPECIALS[index]
    if BYTE_OFFSET <= index < BYTE_OFFSET + 256:
        return f"<0x{index - BYTE_OFFSET:02X}>"
    return piece.decode("utf-8").replace(" ", SPACE)


def build_tokenizer(vocab: Llama2cVocab, model_max_length: int) -> PreTrainedTokenizerFast:
    """llama2.c's encoding as a fast tokenizer (see the module's docstring)."""
    texts = [piece_text(piece, index) for index, piece in enumerate(vocab.pieces)]
    ids = {text: index for index, text in enumerate(texts)}
    merges: list[tuple[float, int, tuple[str, str]]] = []
    for index, text in enumerate(texts):
        if index < BYTE_OFFSET + 256 or len(text) < 2:
            continue
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in ids and right in ids:
                merges.append((-vocab.scores[index], index, (left, right)))
    merges.sort()
    backend = Tokenizer(
        BPE(vocab=ids, merges=[pair for *_, pair in merges], unk_token=SPECIALS[0], fuse_unk=True, byte_fallback=True)
    )
    backend.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    backend.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.add_special_tokens(list(SPECIALS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=SEPARATOR,
        eos_token=SEPARATOR,
        pad_token=SEPARATOR,
        unk_token=SPECIALS[0],
        clean_up_tokenization_spaces=False,
    )
    tokenizer.model_max_length = model_max_length
    return tokenizer


def _rotary_halves(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder each head's rows from run.c's rotary pairs (i, i+1) to transformers' halves (j, j+d/2)."""
    rows, cols = weight.shape
    return weight.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def to_transformers(checkpoint: Llama2cCheckpoint) -> LlamaForCausalLM:
    """The same network as a `LlamaForCausalLM` (float32)."""
    c, w = checkpoint.config, checkpoint.weights
    config = LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.dim,
        intermediate_size=c.hidden_dim,
        num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads,
        max_position_embeddings=c.seq_len,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=c.shared_classifier,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=1,
        dtype="float32",
    )
    model = LlamaForCausalLM(config)
    state = {"model.embed_tokens.weight": w["token_embedding"], "model.norm.weight": w["rms_final"]}
    for i in range(c.n_layers):
        prefix = f"model.layers.{i}."
        state |= {
            prefix + "input_layernorm.weight": w["rms_att"][i],
            prefix + "self_attn.q_proj.weight": _rotary_halves(w["wq"][i], c.n_heads),
            prefix + "self_attn.k_proj.weight": _rotary_halves(w["wk"][i], c.n_kv_heads),
            prefix + "self_attn.v_proj.weight": w["wv"][i],
            prefix + "self_attn.o_proj.weight": w["wo"][i],
            prefix + "post_attention_layernorm.weight": w["rms_ffn"][i],
            prefix + "mlp.gate_proj.weight": w["w1"][i],
            prefix + "mlp.down_proj.weight": w["w2"][i],
            prefix + "mlp.up_proj.weight": w["w3"][i],
        }
    if not c.shared_classifier:
        state["lm_head.weight"] = w["classifier"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [name for name in missing if name != "lm_head.weight"]:
        raise TrainingError(f"The llama2.c weights do not fit: missing {missing}, unexpected {unexpected}.")
    if c.shared_classifier:
        model.tie_weights()
    return model.eval()


def convert(checkpoint_path: Path, tokenizer_path: Path, out: Path, overwrite: bool = False) -> Path:
    """Write the teacher to `out` (model and tokenizer), all or nothing."""
    if out.exists() and not overwrite:
        raise TrainingError(f"`{out}` already exists; pass --overwrite to replace it.")
    checkpoint = read_checkpoint(checkpoint_path)
    vocab = read_vocab(tokenizer_path, checkpoint.config.vocab_size)
    model = to_transformers(checkpoint)
    tokenizer = build_tokenizer(vocab, checkpoint.config.seq_len)
    partial = out.parent / f"{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.training.teacher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="../shared/models/stories260K/stories260K.bin")
    parser.add_argument("--tokenizer", default="../shared/models/stories260K/tok512.bin")
    parser.add_argument("--out", default="data/teacher")
    parser.add_argument("--overwrite", action="store_true")
    options = parser.parse_args(argv)
    try:
        out = convert(Path(options.checkpoint), Path(options.tokenizer), Path(options.out), options.overwrite)
    except (TrainingError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote the teacher to {out}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
