"""Prompts padded to the prefill graphs' buckets: the same logits, the same cache, nobody else's
cache touched (what a GPU replays, run eagerly on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ai_how.serving.engine.kvcache import KVCache, plan_buckets
from ai_how.serving.engine.model import Decoder
from ai_how.serving.engine.prefill_graphs import PrefillGraphs, pick, prefill_buckets
from tests.serving.llm_fixtures import tiny_llama


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Decoder:
    return Decoder.load(tiny_llama(tmp_path_factory.mktemp("tiny-llm")), torch.device("cpu"), torch.float32)


def test_a_batch_takes_the_bucket_with_the_fewest_padded_tokens() -> None:
    buckets = prefill_buckets(8, 512, max_tokens=256)
    assert (8, 32) in buckets and (4, 64) in buckets and (1, 256) in buckets and (2, 256) not in buckets
    assert pick(buckets, 3, 20) == (4, 32) and pick(buckets, 3, 33) == (4, 64)
    assert pick(buckets, 5, 33) is None  # past the token budget: the eager prefill takes it
    assert pick(buckets, 1, 300) is None  # wider than any bucket
    assert prefill_buckets(6, 512, 16384)[:4] == [(1, 32), (2, 32), (4, 32), (6, 32)]  # max_batch itself
    assert all(w <= 64 for _, w in prefill_buckets(4, 64))  # no wider than the context


def test_padded_prefill_equals_the_exact_one_and_leaves_other_slots_alone(decoder: Decoder) -> None:
    s = decoder.shape
    cache = KVCache(
        s.layers, s.kv_heads, s.head_dim, plan_buckets(8, s.max_positions), decoder.device, decoder.dtype
    )
    running = slice(0, 128)  # a sequence decoding meanwhile in the first slot
    for layer in range(s.layers):
        cache.keys[layer][running] = torch.randn_like(cache.keys[layer][running])
        cache.values[layer][running] = torch.randn_like(cache.values[layer][running])
    before = [k[running].clone() for k in cache.keys] + [v[running].clone() for v in cache.values]

    rng = np.random.default_rng(3)
    lengths = np.array([5, 21, 13])
    prompts = np.zeros((3, 21), dtype=np.int64)
    for row, n in enumerate(lengths):
        prompts[row, :n] = rng.integers(4, 300, n)
    slots = np.array([128, 256, 384])
    graphs = PrefillGraphs(decoder, cache, prefill_buckets(8, s.max_positions))
    with torch.inference_mode():
        padded = graphs.run(prompts, lengths, slots)  # 3 rows of 21 -> the (4, 32) bucket
        assert padded is not None and graphs.runs == 1
        padded = padded.clone()
        written = [k[128:512].clone() for k in cache.keys]
        exact = decoder.prefill(
            torch.from_numpy(prompts), torch.from_numpy(lengths), torch.from_numpy(slots), cache
        )
    torch.testing.assert_close(padded, exact)
    for layer, keys in enumerate(cache.keys):  # the exact prefill rewrote the same rows with the same keys
        for row, n in enumerate(lengths):
            start = slots[row] - 128
            torch.testing.assert_close(written[layer][start : start + n], keys[slots[row] : slots[row] + n])
    after = [k[running] for k in cache.keys] + [v[running] for v in cache.values]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_warming_up_never_reruns_live_inputs(decoder: Decoder) -> None:
    """The engine loop's thread warms itself after requests may have run: the warm-ups compute on
    padding rows only, so no live sequence's cache is rewritten (the static inputs hold the last
    prompts and lanes)."""
    from ai_how.serving.engine.graphs import DecodeGraphs

    s = decoder.shape
    cache = KVCache(
        s.layers, s.kv_heads, s.head_dim, plan_buckets(8, s.max_positions), decoder.device, decoder.dtype
    )
    graphs = PrefillGraphs(decoder, cache, prefill_buckets(8, s.max_positions))
    prompts = np.arange(4, 4 + 2 * 20, dtype=np.int64).reshape(2, 20)
    with torch.inference_mode():
        graphs.run(prompts, np.array([20, 20]), np.array([0, 128]))  # the static input now holds them
        last_token = torch.zeros(9, dtype=torch.long)
        decode = DecodeGraphs(decoder, cache, 8, last_token)
        decode.lanes[:2] = torch.tensor([0, 1])  # and the decode inputs two live lanes
        decode.positions[:2] = torch.tensor([20, 20])
        decode.slots[:2] = torch.tensor([0, 128])
        for layer in range(s.layers):  # live sequences' caches, as later steps left them
            cache.keys[layer][: cache.scratch.start] = torch.randn_like(
                cache.keys[layer][: cache.scratch.start]
            )
        before = [k[: cache.scratch.start].clone() for k in cache.keys]
        graphs.warm()
        decode.warm()
    after = [k[: cache.scratch.start] for k in cache.keys]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
