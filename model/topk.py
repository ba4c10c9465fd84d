"""The k likeliest tokens of each row for sampling: Taleweaver's kernel (`model/native/topk.c`)
where it runs, else `torch.topk`.

torch.topk took 0.17 ms a row for k = 40 of GPT-2's 50,257 logits; the kernel compares 16 scores at
a time with the k-th best so far (`bench/kernels.py`). Its answer is torch's for distinct scores;
equal scores come in order of their index, which torch leaves unspecified.
"""

from __future__ import annotations

import torch

from model.native import library


def topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, ids) of each row's k largest scores, largest first; `scores` (rows, vocabulary)."""
    function = library.function("tw_topk")
    if (
        function is None
        or scores.dim() != 2
        or scores.dtype != torch.float32
        or scores.device.type != "cpu"
        or scores.stride(1) != 1
        or not 0 < k <= scores.shape[1]
    ):
        return scores.topk(k, dim=-1)
    rows, vocabulary = scores.shape
    values = torch.empty(rows, k)
    ids = torch.empty(rows, k, dtype=torch.int64)
    if rows and function(scores.data_ptr(), rows, vocabulary, scores.stride(0), k, values.data_ptr(), ids.data_ptr()):
        raise ValueError(f"top-{k} of {vocabulary} scores refused")
    return values, ids
