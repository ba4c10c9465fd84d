"""A key/value cache layer that grows in place, for the continuous batch's decoding steps.

Hugging Face's `DynamicLayer` appends a step's keys and values with `torch.cat`, which copies the
whole cache of every layer at every step: for eight 300-token stories on the shipped model that
copy was the largest single cost of a step (`aten::cat`, half of the step's CPU time in the torch
profiler). `GrowingLayer` keeps its keys and values in a buffer with room to spare and writes each
step's token into it, so a step costs the same at token 10 and at token 300; the buffer is
reallocated (half as large again) only when it is full.

The engine still replaces `keys` and `values` when rows join or leave the batch; the layer notices
that they are no longer views of its buffer and moves them into a new one at the next update.
The numbers are unchanged: attention reads the same values, through a view instead of a copy.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_SPARE = 64
"""Tokens of room added at least when a buffer is (re)made."""


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` whose `keys` and `values` are views of preallocated buffers."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.is_initialized = True
        self.device = keys.device
        self.keys, self.values = keys, values
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        length = self.keys.shape[-2]
        end = length + key_states.shape[-2]
        if not self._buffers_hold(end):
            room = end + max(MIN_SPARE, end // 2)
            self._key_buffer = _with_room(self.keys, room)
            self._value_buffer = _with_room(self.values, room)
        self._key_buffer[:, :, length:end] = key_states
        self._value_buffer[:, :, length:end] = value_states
        self.keys = self._key_buffer[:, :, :end]
        self.values = self._value_buffer[:, :, :end]
        return self.keys, self.values

    def _buffers_hold(self, end: int) -> bool:
        """The keys and values are still the front of the buffers, and `end` tokens fit."""
        keys, buffer = self.keys, self._key_buffer
        return (
            buffer is not None
            and end <= buffer.shape[-2]
            and keys.shape[:2] == buffer.shape[:2]
            and keys.data_ptr() == buffer.data_ptr()
            and keys.stride() == buffer.stride()
            and self.values.data_ptr() == self._value_buffer.data_ptr()
            and self.values.stride() == self._value_buffer.stride()
        )


def _with_room(tensor: torch.Tensor, room: int) -> torch.Tensor:
    """`tensor` (batch, heads, length, dim) copied to the front of a buffer of `room` positions."""
    batch, heads, length, dim = tensor.shape
    buffer = tensor.new_empty(batch, heads, room, dim)
    buffer[:, :, :length] = tensor
    return buffer


def growing(cache: DynamicCache) -> DynamicCache:
    """`cache` with its layers swapped for `GrowingLayer`s over the same keys and values."""
    cache.layers = [
        layer if isinstance(layer, GrowingLayer) else GrowingLayer(layer.keys, layer.values) for layer in cache.layers
    ]
    return cache
