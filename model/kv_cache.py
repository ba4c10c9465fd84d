"""A key/value cache layer that grows in place, for the continuous batch: steps, joins and departures.

Hugging Face's `DynamicLayer` appends a step's keys and values with `torch.cat`, which copies the
whole cache of every layer at every step: for eight 300-token stories on the shipped model that
copy was the largest single cost of a step (`aten::cat`, half of the step's CPU time in the torch
profiler). `GrowingLayer` keeps its keys and values in buffers with room to spare, in rows and in
positions, and works inside them:

- a step writes its token into the spare positions (a step costs the same at token 10 and at 300),
  reserved for the longest story's length when it joins;
- a story that joins is written into a spare row, right-aligned with the others, its left padding
  zeroed (or the others' padding extended to the left, into room left by earlier cuts);
- a story that leaves is closed up by moving only the rows after it, and padding columns that no
  row needs any more are dropped by moving the start of the view.

Joins and departures used to rebuild the whole cache twice (a `torch.cat` or an index, then a new
buffer at the next step): on GPT-2 small with seven 300-token stories that was a stall of 0.1–0.25 s
for every story in the batch, each time one joined or left. The buffers are reallocated (half as
large again) only when positions or rows run out.

`keys` and `values` are views of the buffers: rows `[:rows]`, positions `[start:end]`. Code that
replaces them (Hugging Face's own cache methods, a test) is noticed at the next operation, and the
replacements are moved into new buffers. The numbers are unchanged: attention reads the same values,
through a view instead of a copy.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_SPARE = 64
"""Positions of room added at least when a buffer is (re)made."""


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` whose `keys` and `values` are views of preallocated buffers."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, row_room: int = 1, spare: int = MIN_SPARE) -> None:
        super().__init__()
        self.is_initialized = True
        self.device = keys.device
        self.keys, self.values = keys, values
        self._rebuffer(rows=max(row_room, keys.shape[0]), width=keys.shape[-2], spare=max(spare, MIN_SPARE))

    # What the model calls ------------------------------------------------------------------------
    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[-2]
        end, rows = self._take(new), self._rows
        self._key_buffer[:rows, :, end : end + new] = key_states
        self._value_buffer[:rows, :, end : end + new] = value_states
        self._make_views()
        return self.keys, self.values

    def advance(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One more position, taken for every row: the views including it, whose keys and values the
        caller writes (`model.fused_blocks`: a block's C code writes them straight into the buffers)."""
        self._take(1)
        self._make_views()
        return self.keys, self.values

    def _take(self, new: int) -> int:
        """`new` more positions for every row (the buffers remade with room if they lack it); returns
        where they start."""
        self._check_views()
        if self._end + new > self._key_buffer.shape[2]:
            width = self._end - self._start
            self._rebuffer(rows=self._key_buffer.shape[0], width=width, spare=new + max(MIN_SPARE, width // 2))
        end = self._end
        self._end += new
        return end

    # What the engine calls -----------------------------------------------------------------------
    def add_row(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """A row joins: `keys` and `values` (1, heads, length, dim) go into the next free row, right-
        aligned with the others; whichever is shorter is padded on the left with zeros (which the
        attention mask hides; zeros rather than garbage, since 0 × NaN is NaN)."""
        self._check_views()
        length, width = keys.shape[-2], self._end - self._start
        capacity = self._key_buffer.shape[0]
        rows = capacity if self._rows < capacity else max(1, 2 * self._rows)
        if rows > capacity or length - width > self._start:  # no free row, or no room on the left
            spare = max(MIN_SPARE, self._key_buffer.shape[2] - self._end)
            self._rebuffer(rows=rows, width=max(width, length), spare=spare)
        elif length > width:  # the new row is longer: the others' padding grows into the room on the left
            start = self._end - length
            self._key_buffer[: self._rows, :, start : self._start] = 0
            self._value_buffer[: self._rows, :, start : self._start] = 0
            self._start = start
        row, start, end = self._rows, self._start, self._end
        for buffer, new in ((self._key_buffer, keys), (self._value_buffer, values)):
            buffer[row, :, start : end - length] = 0
            buffer[row, :, end - length : end] = new[0]
        self._rows += 1
        self._make_views()

    def reserve(self, positions: int) -> None:
        """Room for `positions` more steps, made now in one new buffer (if it is not there) rather
        than by growing half as large again several times on the way, each a copy of the whole cache.
        Positions not yet written are not touched, so they take no memory until they are; so the new
        buffer has room for twice as many, and a story that joins later is likely to fit in it."""
        self._check_views()
        if self._end + positions > self._key_buffer.shape[2]:
            self._rebuffer(rows=self._key_buffer.shape[0], width=self._end - self._start, spare=2 * positions)

    def keep_rows(self, rows: list[int], cut: int = 0) -> None:
        """Only `rows` (ascending indices) stay, closed up in place; the first `cut` positions are
        dropped (padding that no remaining row needs)."""
        self._check_views()
        start, end = self._start + cut, self._end
        for new, old in enumerate(rows):
            if new != old:  # new < old: the rows do not overlap
                self._key_buffer[new, :, start:end] = self._key_buffer[old, :, start:end]
                self._value_buffer[new, :, start:end] = self._value_buffer[old, :, start:end]
        self._rows, self._start = len(rows), start
        self._make_views()

    # Inside --------------------------------------------------------------------------------------
    def _check_views(self) -> None:
        """If `keys` or `values` were replaced from outside, move the replacements into new buffers."""
        if self.keys is not self._views[0] or self.values is not self._views[1]:
            self._rebuffer(
                rows=max(self.keys.shape[0], self._key_buffer.shape[0]), width=self.keys.shape[-2], spare=MIN_SPARE
            )

    def _rebuffer(self, rows: int, width: int, spare: int) -> None:
        """New buffers of `rows` rows and `width` + `spare` positions, holding the current keys and
        values right-aligned at `width` (zeros on the left where they are narrower)."""
        keys, values = self.keys, self.values
        count, heads, length, dim = keys.shape
        self._key_buffer = keys.new_empty(rows, heads, width + spare, dim)
        self._value_buffer = values.new_empty(rows, heads, width + spare, dim)
        for buffer, old in ((self._key_buffer, keys), (self._value_buffer, values)):
            buffer[:count, :, : width - length] = 0
            buffer[:count, :, width - length : width] = old
        self._rows, self._start, self._end = count, 0, width
        self._make_views()

    def _make_views(self) -> None:
        rows, start, end = self._rows, self._start, self._end
        self.keys = self._key_buffer[:rows, :, start:end]
        self.values = self._value_buffer[:rows, :, start:end]
        self._views = (self.keys, self.values)


def growing(cache: DynamicCache, row_room: int = 1, spare: int = MIN_SPARE) -> DynamicCache:
    """`cache` with its layers swapped for `GrowingLayer`s holding the same keys and values, with
    room for `row_room` rows and `spare` more positions."""
    cache.layers = [
        layer if isinstance(layer, GrowingLayer) else GrowingLayer(layer.keys, layer.values, row_room, spare)
        for layer in cache.layers
    ]
    return cache
