"""Loading through `from_pretrained`: a saved directory round-trips; failures say why."""

from __future__ import annotations

import pytest
import torch

from core.errors import ModelLoadError
from model.loading import load_model, pick_device, pick_dtype


def test_saved_directory_loads_frozen_in_eval_mode_on_cpu(tiny_model_dir) -> None:
    loaded = load_model(tiny_model_dir)
    assert loaded.device.type == "cpu" and loaded.dtype == torch.float32
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.tokenizer.pad_token_id is not None
    assert loaded.tokenizer.decode(loaded.tokenizer("Once upon a time")["input_ids"]) == "Once upon a time"


def test_bfloat16_can_be_asked_for(tiny_model_dir) -> None:
    assert load_model(tiny_model_dir, dtype="bfloat16").dtype == torch.bfloat16


def test_missing_model_says_the_hub_is_off(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not a local directory.*hub is off"):
        load_model("no-such-org/no-such-model")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32


def test_missing_local_directory_fails_at_once_without_asking_the_hub(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="no model directory"):
        load_model(tmp_path / "missing")
