"""ai-how's continuous-batching engine on CPU: the tokens users get are the model's, whatever the batch."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ai_how.serving.engine.loader import load_llm
from ai_how.serving.engine.protocol import EngineFull, SamplingParams
from tests.serving.llm_fixtures import tiny_llama


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture(scope="module")
def llm(model_dir: Path) -> Iterator[Any]:
    engine = load_llm(model_dir, "tiny", device="cpu", max_batch=6)
    engine.engine.warm_up()
    engine.start()
    yield engine
    engine.stop()


def reference(model_dir: Path, prompt: list[int], n: int) -> list[int]:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    return [int(t) for t in out[0, len(prompt) :]]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_greedy_tokens_equal_generate_for_concurrent_mixed_requests(llm: Any, model_dir: Path) -> None:
    rng = random.Random(7)
    vocab = len(llm.tokenizer)
    prompts = [[rng.randrange(4, vocab) for _ in range(rng.randrange(2, 40))] for _ in range(18)]
    lengths = [rng.randrange(1, 30) for _ in prompts]

    async def all_at_once() -> list[Any]:
        jobs = [
            llm.complete(p, SamplingParams(max_tokens=n, ignore_eos=True))
            for p, n in zip(prompts, lengths, strict=True)
        ]
        return await asyncio.gather(*jobs)

    answers = run(all_at_once())
    # 18 requests through 6 batch slots: requests joined and left between steps
    assert max(llm.engine.stats.batch_histogram) == 6
    for prompt, n, answer in zip(prompts, lengths, answers, strict=True):
        assert answer.token_ids == reference(model_dir, prompt, n)
        assert answer.finish == "length"


def test_a_seeded_sample_does_not_depend_on_its_batch(llm: Any) -> None:
    params = SamplingParams(max_tokens=12, temperature=0.9, top_p=0.9, seed=1234, ignore_eos=True)
    alone = run(llm.complete([5, 6, 7], params)).token_ids

    async def crowded() -> Any:
        noise = [llm.complete([9, 9], SamplingParams(max_tokens=20, temperature=1.0)) for _ in range(4)]
        mine = llm.complete([5, 6, 7], params)
        return (await asyncio.gather(mine, *noise))[0]

    assert run(crowded()).token_ids == alone
    other = run(llm.complete([5, 6, 7], SamplingParams(12, 0.9, 0.9, seed=99, ignore_eos=True))).token_ids
    assert other != alone


def test_a_stop_string_ends_the_answer_before_it(llm: Any) -> None:
    free = run(llm.complete([5, 6, 7], SamplingParams(max_tokens=20, ignore_eos=True)))
    stop = free.text[3:6]
    assert stop, "the tiny model produced too little text to pick a stop string"
    cut = run(llm.complete([5, 6, 7], SamplingParams(max_tokens=20, stop=(stop,), ignore_eos=True)))
    assert cut.finish == "stop"
    assert cut.text == free.text[: free.text.index(stop)]


def test_a_consumer_that_goes_away_frees_its_slot(llm: Any) -> None:
    async def leave_early() -> None:
        stream = llm.generate([5, 6, 7], SamplingParams(max_tokens=400, ignore_eos=True))
        await stream.__anext__()
        await stream.aclose()  # what a closed SSE response does
        for _ in range(100):
            if llm.engine.stats.running == 0 and llm.engine.cache.used_tokens == 0:
                return
            await asyncio.sleep(0.02)

    run(leave_early())
    assert llm.engine.stats.running == 0
    assert llm.engine.cache.used_tokens == 0


def test_limits_are_refused_before_anything_runs(llm: Any) -> None:
    with pytest.raises(ValueError, match="exceed the context"):
        llm.engine.submit([1, 2, 3], SamplingParams(max_tokens=100_000))
    with pytest.raises(ValueError, match="empty"):
        llm.engine.submit([], SamplingParams())


def test_a_full_queue_refuses_instead_of_growing(model_dir: Path) -> None:
    engine = load_llm(model_dir, "tiny", device="cpu", max_batch=2, max_waiting=3)
    # not started: nothing leaves the queue
    for _ in range(3):
        engine.engine.submit([1, 2], SamplingParams(max_tokens=2))
    with pytest.raises(EngineFull):
        engine.engine.submit([1, 2], SamplingParams(max_tokens=2))


def test_the_engine_in_its_own_process_gives_the_same_tokens(model_dir: Path, llm: Any) -> None:
    """The GPU default (engine process) on CPU: same answers, aborts and 429s as in-process."""
    remote = load_llm(model_dir, "tiny", device="cpu", max_batch=4, max_waiting=2, process="yes")
    remote.engine.warm_up()
    remote.start()
    try:
        prompts = [[5, 6, 7], [9, 10, 11, 12, 13], [20, 21]]

        async def both() -> tuple[list[Any], list[Any]]:
            params = SamplingParams(max_tokens=9, ignore_eos=True)
            here = await asyncio.gather(*(llm.complete(p, params) for p in prompts))
            there = await asyncio.gather(*(remote.complete(p, params) for p in prompts))
            return here, there

        here, there = run(both())
        assert [a.token_ids for a in there] == [a.token_ids for a in here]

        async def overload() -> list[Any]:
            long = SamplingParams(max_tokens=300, ignore_eos=True)
            jobs = [remote.complete([5, 6], long) for _ in range(10)]  # capacity: 4 running + 2 waiting
            return await asyncio.gather(*jobs, return_exceptions=True)

        outcomes = run(overload())
        refused = [o for o in outcomes if isinstance(o, EngineFull)]
        answered = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(refused) == 4 and len(answered) == 6
        assert all(len(a.token_ids) == 300 for a in answered)
    finally:
        remote.stop()


def test_the_kv_cache_budget_reaches_the_engine_process(model_dir: Path) -> None:
    """``--kv-cache-gb``: a budget that holds one 512-token slot runs two long requests one after the
    other; without it they share every decode step."""
    import json

    config = json.loads((model_dir / "config.json").read_text())
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    per_token = 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * 4  # K+V, fp32
    params = SamplingParams(max_tokens=200, ignore_eos=True)  # 203 tokens: a 512-token slot each

    def steps_and_rows(budget: int | None) -> tuple[int, int]:
        remote = load_llm(model_dir, "tiny", device="cpu", max_batch=4, process="yes", kv_cache_bytes=budget)
        remote.engine.warm_up()
        remote.start()
        try:

            async def two() -> list[Any]:
                return await asyncio.gather(*(remote.complete([5 + i, 6, 7], params) for i in range(2)))

            assert all(len(a.token_ids) == 200 for a in run(two()))
            return remote.engine.stats.steps, remote.engine.stats.step_rows
        finally:
            remote.stop()

    steps, rows = steps_and_rows((128 + 512) * per_token)  # one slot of each size
    assert rows == 2 * 199 and steps == rows, "one sequence per step"
    steps, rows = steps_and_rows(None)
    assert rows == 2 * 199 and steps < rows, "both in the same steps"


def test_a_dead_engine_process_fails_in_flight_requests_and_refuses_new_ones(model_dir: Path) -> None:
    from ai_how.serving.engine.protocol import EngineGone

    remote = load_llm(model_dir, "tiny", device="cpu", max_batch=2, process="yes")
    remote.engine.warm_up()
    remote.start()
    told: list[str] = []
    remote.engine.on_gone.append(told.append)
    try:

        async def interrupted() -> Any:
            stream = remote.generate([5, 6], SamplingParams(max_tokens=400, ignore_eos=True))
            await stream.__anext__()
            remote.engine._process.kill()  # what the OOM killer or a GPU fault does
            last = None
            async for chunk in stream:
                last = chunk
            return last

        last = run(interrupted())
        assert last is not None and last.finish == "error"
        assert told and "exited" in told[0]
        with pytest.raises(EngineGone):
            remote.engine.submit([1, 2], SamplingParams(max_tokens=2))
    finally:
        remote.stop()


def test_the_kv_cache_plan_fits_the_memory_budget() -> None:
    from ai_how.serving.engine.kvcache import plan_buckets

    # a 32k-context model: the long buckets shrink first, every bucket keeps a slot
    plan = plan_buckets(512, 32768, max_tokens=100_000)
    assert sum(capacity * count for capacity, count in plan) <= 100_000
    assert [capacity for capacity, _ in plan] == [128, 512, 2048, 8192, 32768]
    assert all(count >= 1 for _, count in plan)
    # without a budget problem nothing changes, and a full batch of any one length fits
    assert plan_buckets(512, 2048, max_tokens=10**9) == plan_buckets(512, 2048)
    assert plan_buckets(32, 512, max_tokens=10**6) == [(128, 32), (512, 32)]


def test_a_full_batch_of_long_prompts_runs_at_once(llm: Any) -> None:
    """Prompts past the shortest slot (200-token chat prompts, say) still fill every lane."""
    long_prompts = [[5 + i] * 150 for i in range(6)]
    before = llm.engine.stats.batch_histogram.copy()

    async def together() -> list[Any]:
        jobs = [llm.complete(p, SamplingParams(max_tokens=8, ignore_eos=True)) for p in long_prompts]
        return await asyncio.gather(*jobs)

    answers = run(together())
    assert all(len(a.token_ids) == 8 for a in answers)
    assert (llm.engine.stats.batch_histogram - before)[6] >= 1, "the six decoded in one batch"


def test_a_failed_step_answers_everyone_and_the_engine_keeps_serving(model_dir: Path) -> None:
    """A step that raises (say, out of memory in a prefill): every request held gets a final
    'error', slots and lanes come back, and the next request is served normally."""
    from ai_how.serving.engine.protocol import EngineGone

    llm = load_llm(model_dir, "tiny", device="cpu", max_batch=4)
    llm.engine.warm_up()
    engine = llm.engine
    real_prefill = engine.decoder.prefill
    failures = ["RuntimeError: out of memory (simulated)"]

    def failing_prefill(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise RuntimeError(failures.pop())
        return real_prefill(*args, **kwargs)

    engine.decoder.prefill = failing_prefill
    llm.start()
    try:

        async def batch() -> list[Any]:
            params = SamplingParams(max_tokens=5, ignore_eos=True)
            return await asyncio.gather(*(llm.complete([5, 6, i], params) for i in range(3)))

        first = run(batch())
        assert [a.finish for a in first] == ["error"] * 3
        assert engine.cache.used_tokens == 0 and len(engine._free_lanes) == 4 and not engine._live
        again = run(batch())
        assert [len(a.token_ids) for a in again] == [5, 5, 5]

        # a poisoned device: the engine stops taking work and says why
        failures.append("CUDA error: device-side assert triggered")
        told: list[str] = []
        engine.on_fatal = told.append
        assert [a.finish for a in run(batch())] == ["error"] * 3
        deadline = time.monotonic() + 5  # told right after the answers went out
        while not told and time.monotonic() < deadline:
            time.sleep(0.01)
        assert told and "device-side assert" in told[0]
        with pytest.raises(EngineGone):
            engine.submit([1, 2], SamplingParams(max_tokens=2))
    finally:
        llm.stop()


def test_long_prompts_prefill_in_query_chunks_with_the_same_tokens(
    llm: Any, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ai_how.serving.engine import model

    monkeypatch.setattr(model, "PREFILL_QUERY_CHUNK", 8)  # a 37-token prompt: five query blocks
    prompt = [(7 * i) % 300 + 4 for i in range(37)]
    answer = run(llm.complete(prompt, SamplingParams(max_tokens=6, ignore_eos=True)))
    assert answer.token_ids == reference(model_dir, prompt, 6)


def test_every_batch_replays_a_graph_at_most_a_little_larger() -> None:
    """Each batch size replays the smallest captured bucket that holds it: under 256 rows at most
    twice its size, beyond that at most 128 rows of padding (a step's cost grows with its rows)."""
    from ai_how.serving.engine.graphs import bucket_sizes

    for max_batch in (1, 6, 256, 300, 512, 1024):
        sizes = bucket_sizes(max_batch)
        assert sizes == sorted(set(sizes)) and sizes[-1] == max_batch
        for n in range(1, max_batch + 1):
            replayed = next(s for s in sizes if s >= n)
            assert replayed <= max(2 * n, n + 127), (max_batch, n, replayed)


def test_prompts_padded_to_prefill_buckets_give_the_same_tokens(model_dir: Path) -> None:
    """The GPU's prefill graphs see prompts padded to fixed (rows, width) buckets; the same padding
    run eagerly on CPU must leave every answer equal to ``generate``."""
    from ai_how.serving.engine import checkpoint
    from ai_how.serving.engine.core import Engine
    from ai_how.serving.engine.frontend import AsyncLLM
    from ai_how.serving.engine.model import Decoder

    decoder = Decoder.load(model_dir, torch.device("cpu"), torch.float32)
    eos = checkpoint.eos_ids(model_dir, None)
    llm = AsyncLLM(
        lambda emit: Engine(decoder, eos, emit, max_batch=8, max_prefill_tokens=256, padded_prefill=True),
        __import__("transformers").AutoTokenizer.from_pretrained(model_dir),
        "padded",
    )
    llm.engine.warm_up()
    llm.start()
    try:
        rng = random.Random(11)
        prompts = [[rng.randrange(4, 300) for _ in range(rng.randrange(1, 70))] for _ in range(13)]
        prompts.append([(3 * i) % 290 + 4 for i in range(300)])  # wider than any bucket
        lengths = [rng.randrange(1, 12) for _ in prompts]
        lengths[0] = 60  # runs while later prompts are prefilled with padding rows beside it

        async def all_at_once() -> list[Any]:
            return await asyncio.gather(
                *(
                    llm.complete(p, SamplingParams(max_tokens=n, ignore_eos=True))
                    for p, n in zip(prompts, lengths, strict=True)
                )
            )

        answers = run(all_at_once())
        graphs = llm.engine.prefill_graphs
        assert 0 < graphs.runs < llm.engine.stats.prefills  # most prefills padded, the widest eager
        for prompt, n, answer in zip(prompts, lengths, answers, strict=True):
            assert answer.token_ids == reference(model_dir, prompt, n)
    finally:
        llm.stop()


def test_graphs_are_captured_from_the_loop_while_it_serves(model_dir: Path, llm: Any) -> None:
    """A GPU engine process answers before its graphs exist and captures one per loop iteration:
    pending captures all run, while requests are answered and while nothing is asked (an idle loop
    must not sleep on its inbox with captures left); a failed capture leaves it serving."""
    remote = load_llm(model_dir, "tiny", device="cpu", max_batch=4)
    remote.engine.warm_up()
    done: list[int] = []
    remote.engine._captures.extend(functools.partial(done.append, i) for i in range(40))
    remote.start()
    try:
        prompts = [[5, 6, 7], [9, 10, 11, 12, 13]]
        params = SamplingParams(max_tokens=9, ignore_eos=True)

        async def both() -> tuple[list[Any], list[Any]]:
            return (
                await asyncio.gather(*(remote.complete(p, params) for p in prompts)),
                await asyncio.gather(*(llm.complete(p, params) for p in prompts)),
            )

        during, reference_answers = run(both())
        assert [a.token_ids for a in during] == [a.token_ids for a in reference_answers]
        deadline = time.monotonic() + 5
        while len(done) < 40 and time.monotonic() < deadline:  # the rest while idle, not 0.5 s apart
            time.sleep(0.01)
        assert done == list(range(40))

        def broken_capture() -> None:
            raise RuntimeError("capture failed (simulated)")

        remote.engine._captures.extend([broken_capture, functools.partial(done.append, 40)])
        deadline = time.monotonic() + 5
        while remote.engine._captures and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not remote.engine._captures and done[-1] == 39  # the rest dropped: served without graphs
        again = run(remote.complete(prompts[0], params))
        assert again.token_ids == reference_answers[0].token_ids
    finally:
        remote.stop()


def test_an_http_process_of_an_engine_process_imports_neither_torch_nor_transformers(model_dir: Path) -> None:
    """With the engine in its own process (the GPU default), the HTTP side holds only the tokenizer:
    torch and transformers stay out of it (seconds of cold start, hundreds of MB per HTTP process)."""
    import subprocess
    import sys

    code = (
        "import asyncio, sys\n"
        "from ai_how.serving.engine.loader import load_llm\n"
        "from ai_how.serving.engine.protocol import SamplingParams\n"
        f"llm = load_llm({str(model_dir)!r}, 'tiny', device='cpu', process='yes')\n"
        "llm.engine.warm_up(); llm.start()\n"
        "answer = asyncio.run(llm.complete([5, 6, 7], SamplingParams(max_tokens=3, ignore_eos=True)))\n"
        "llm.stop()\n"
        "print(len(answer.token_ids), 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip().splitlines()[-1] == "3 False False"
