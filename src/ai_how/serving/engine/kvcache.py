"""The KV cache: one flat buffer per layer, carved into per-sequence slots bucketed by length.

A sequence takes the smallest free slot that holds its prompt plus ``max_tokens``, so a 96-token
request never pins a 2,048-token slot, and attention reads only the live tokens of each slot (the
ragged kernel), never a padded static cache. Slot ``start`` offsets index the flat buffer directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Slot:
    start: int
    capacity: int


def plan_buckets(
    max_sequences: int, max_positions: int, max_tokens: int | None = None
) -> list[tuple[int, int]]:
    """(capacity, count) pairs: slots of 128, 512, 2048, ... tokens, the last reaching the context.

    Every bucket starts with ``max_sequences`` slots, so a full batch of any one length fits (a
    quarter as many long slots as short ones capped a batch of 200-token chat prompts at 8 of 32
    lanes). With ``max_tokens`` (what the memory budget holds) the longer buckets shrink first, then
    the shorter ones, each keeping at least one slot, so a long-context model never plans more cache
    than fits."""
    buckets: list[tuple[int, int]] = []
    capacity = 128
    while capacity < max_positions:
        buckets.append((capacity, max_sequences))
        capacity *= 4
    buckets.append((max_positions, max_sequences))
    if max_tokens is not None:
        for i in reversed(range(len(buckets))):
            over = sum(c * n for c, n in buckets) - max_tokens
            if over <= 0:
                break
            capacity, count = buckets[i]
            buckets[i] = (capacity, max(1, count - -(-over // capacity)))
    return buckets


class KVCache:
    def __init__(
        self,
        layers: int,
        kv_heads: int,
        head_dim: int,
        buckets: list[tuple[int, int]],
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.buckets = sorted(buckets)
        self._free: dict[int, list[Slot]] = {}
        start = 0
        for capacity, count in self.buckets:
            self._free[capacity] = [Slot(start + i * capacity, capacity) for i in reversed(range(count))]
            start += capacity * count
        self.scratch = Slot(start, 1)  # where padding rows of a captured batch write and read
        self.tokens = start + 1
        shape = (self.tokens, kv_heads, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.capacity_tokens = start
        self.used_tokens = 0
        self.bytes = 2 * layers * self.tokens * kv_heads * head_dim * self.keys[0].element_size()

    @property
    def largest(self) -> int:
        return self.buckets[-1][0]

    def allocate(self, need: int) -> Slot | None:
        """The smallest free slot of at least ``need`` tokens, or None when every fitting slot is taken."""
        for capacity, _ in self.buckets:
            if capacity >= need and self._free[capacity]:
                slot = self._free[capacity].pop()
                self.used_tokens += slot.capacity
                return slot
        return None

    def release(self, slot: Slot) -> None:
        self._free[slot.capacity].append(slot)
        self.used_tokens -= slot.capacity

    def usage(self) -> float:
        return self.used_tokens / self.capacity_tokens if self.capacity_tokens else 0.0
