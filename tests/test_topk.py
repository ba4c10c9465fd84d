"""The sampling top-k (model/topk.py, model/native/topk.c): torch.topk's answer for distinct
scores, equal scores in index order, any k up to the vocabulary, and torch itself where the
kernel does not run."""

from __future__ import annotations

import pytest
import torch

from model import topk as topk_module
from model.native import library

needs_kernel = pytest.mark.skipif(library.function("tw_topk") is None, reason="no AVX-512 VNNI CPU or no C compiler")


@needs_kernel
@pytest.mark.parametrize(
    ("rows", "vocabulary", "k"), [(1, 50257, 40), (8, 50257, 40), (3, 512, 5), (2, 17, 17), (4, 33, 1)]
)
def test_the_kernel_gives_torchs_top_k(rows, vocabulary, k) -> None:
    scores = torch.randn(rows, vocabulary, generator=torch.Generator().manual_seed(vocabulary))
    values, ids = topk_module.topk(scores, k)
    expected_values, expected_ids = scores.topk(k, dim=-1)
    assert torch.equal(values, expected_values) and torch.equal(ids, expected_ids)


@needs_kernel
def test_equal_scores_come_in_index_order_and_a_row_ignores_its_neighbours() -> None:
    scores = torch.zeros(3, 100)
    scores[0, [70, 10, 40]] = 5.0  # a three-way tie at the top
    scores[1] = float("-inf")
    scores[1, 99] = 1.0
    scores[2] = torch.arange(100.0)
    values, ids = topk_module.topk(scores, 4)
    assert ids[0].tolist() == [10, 40, 70, 0] and values[0].tolist() == [5.0, 5.0, 5.0, 0.0]
    assert ids[1].tolist() == [99, 0, 1, 2] and values[1, 0] == 1.0 and torch.isinf(values[1, 1:]).all()
    assert ids[2].tolist() == [99, 98, 97, 96]
    alone = [topk_module.topk(scores[r : r + 1], 4) for r in range(3)]
    assert all(torch.equal(a[1][0], ids[r]) for r, a in enumerate(alone))
    strided = torch.zeros(3, 200)[:, ::2]  # not contiguous along the vocabulary: torch's own
    assert topk_module.topk(strided, 3)[1].shape == (3, 3)


def test_without_the_kernel_it_is_torch_topk(monkeypatch) -> None:
    monkeypatch.setattr(library, "function", lambda name: None)
    scores = torch.randn(2, 300)
    values, ids = topk_module.topk(scores, 7)
    assert torch.equal(ids, scores.topk(7, dim=-1).indices)
