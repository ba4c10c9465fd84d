"""Weights between two models of one shape: exact at the ends, the mean in the middle, refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from model.training.interpolate import interpolate, main


@pytest.fixture
def two_models(tiny_model_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The fixture model and a copy whose weights are all moved by +1."""
    b = tmp_path / "b"
    shutil.copytree(tiny_model_dir, b)
    model = AutoModelForCausalLM.from_pretrained(b, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.save_pretrained(b)
    return tiny_model_dir, b


def weights(path: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()


def test_ends_are_the_models_and_the_middle_is_their_mean(two_models, tmp_path) -> None:
    a, b = two_models
    wa, wb = weights(a), weights(b)
    for weight, expected in ((1.0, wa), (0.0, wb)):
        got = weights(interpolate(a, b, weight, tmp_path / f"w{weight}"))
        assert all(torch.equal(got[k], expected[k]) for k in expected)
    middle = weights(interpolate(a, b, 0.25, tmp_path / "mid"))
    for k in wa:
        assert torch.allclose(middle[k], 0.25 * wa[k] + 0.75 * wb[k], atol=1e-6)
        assert not torch.equal(middle[k], wa[k])


def test_refusals_write_nothing(two_models, tmp_path, capsys) -> None:
    a, b = two_models
    with pytest.raises(SystemExit) as exit_info:
        main([str(a), str(b), "--weight", "1.5", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    other = tmp_path / "other"
    config = AutoModelForCausalLM.from_pretrained(a).config
    config.n_layer += 1
    AutoModelForCausalLM.from_config(config).save_pretrained(other)
    shutil.copy(a / "tokenizer.json", other / "tokenizer.json")
    shutil.copy(a / "tokenizer_config.json", other / "tokenizer_config.json")
    with pytest.raises(ValueError, match="same shape"):
        interpolate(a, other, 0.5, tmp_path / "out")
    assert not (tmp_path / "out").exists()
