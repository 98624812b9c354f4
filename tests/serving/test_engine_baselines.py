"""The three LLM engines (ours, naive, transformers) answer alike behind ``AsyncLLM``.

On a real tiny Llama (random weights, built here): concurrent greedy requests give exactly the tokens
of HF ``generate``; EOS ends a request without sending the EOS token unless ``ignore_eos``; an abort
ends a request with ``finish="abort"`` and the engine keeps serving; a full queue raises EngineFull;
the context limit is refused before anything runs.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_how.serving.engine.frontend import AsyncLLM, Chunk
from ai_how.serving.engine.loader import load_llm
from ai_how.serving.engine.protocol import EngineFull, SamplingParams
from tests.serving.llm_fixtures import tiny_llama

ENGINES = ["ours", "naive", "transformers"]
EOS = 2  # build_tiny_llama's <|im_end|>
PAD = 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("lm"))


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> Callable[[list[int], int, bool], list[int]]:
    """HF ``generate``'s greedy tokens; with ``stop_at_eos`` False it runs through EOS."""
    import torch
    from transformers import AutoModelForCausalLM

    hf: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    hf.eval()
    assert hf.generation_config.eos_token_id == EOS

    def generate(prompt: list[int], max_tokens: int, stop_at_eos: bool) -> list[int]:
        eos = {} if stop_at_eos else {"eos_token_id": None}
        with torch.inference_mode():
            out = hf.generate(
                torch.tensor([prompt]), max_new_tokens=max_tokens, do_sample=False, pad_token_id=PAD, **eos
            )
        return [int(t) for t in out[0, len(prompt) :]]

    return generate


@pytest.fixture
def open_llm(model_dir: Path) -> Iterator[Callable[..., AsyncLLM]]:
    opened: list[AsyncLLM] = []

    def open_(engine: str, start: bool = True, **kwargs: Any) -> AsyncLLM:
        llm: AsyncLLM = load_llm(model_dir, "tiny", engine=engine, device="cpu", max_batch=4, **kwargs)
        opened.append(llm)
        if start:
            llm.engine.warm_up()
            llm.start()
        return llm

    yield open_
    for llm in opened:
        llm.stop()


def live_request_id(llm: AsyncLLM) -> int:
    """The engine id of the one request ``llm`` is streaming."""
    [request_id] = llm._streams
    return request_id


async def submitted(llm: AsyncLLM, stream: Any) -> tuple[asyncio.Future[Chunk], int]:
    """Start ``stream`` until it has submitted its request; its first chunk comes later."""
    first = asyncio.ensure_future(anext(stream))
    while not llm._streams:
        await asyncio.sleep(0)
    return first, live_request_id(llm)


@pytest.mark.parametrize("engine", ENGINES)
def test_concurrent_greedy_requests_give_hf_generate_tokens(
    open_llm: Callable[..., AsyncLLM], reference: Callable[[list[int], int, bool], list[int]], engine: str
) -> None:
    llm = open_llm(engine)
    rng = random.Random(0)
    prompts = [[rng.randrange(4, 300) for _ in range(n)] for n in (3, 30, 7, 1, 18, 12)]
    prompts[2][-1] = EOS  # the model repeats EOS: ignore_eos must carry on through it
    lengths = [1, 20, 5, 12, 9, 16]

    async def main() -> list[Any]:
        return await asyncio.gather(
            *[
                llm.complete(p, SamplingParams(max_tokens=n, ignore_eos=True))
                for p, n in zip(prompts, lengths, strict=True)
            ]
        )

    outs = asyncio.run(main())
    for prompt, n, out in zip(prompts, lengths, outs, strict=True):
        assert out.token_ids == reference(prompt, n, False)
        assert out.finish == "length"
    assert EOS in outs[2].token_ids
    assert llm.engine.stats.generated_tokens == sum(lengths)


@pytest.mark.parametrize("engine", ENGINES)
def test_eos_ends_the_request_without_the_eos_token(
    open_llm: Callable[..., AsyncLLM], reference: Callable[[list[int], int, bool], list[int]], engine: str
) -> None:
    llm = open_llm(engine)
    prompt = [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, EOS]
    expected = reference(prompt, 8, True)
    assert expected[-1] == EOS and len(expected) < 8  # the tiny model does stop here

    out = asyncio.run(llm.complete(prompt, SamplingParams(max_tokens=8)))
    assert (out.token_ids, out.finish) == (expected[:-1], "stop")


@pytest.mark.parametrize("engine", ENGINES)
def test_abort_ends_a_running_request_and_the_engine_keeps_serving(
    open_llm: Callable[..., AsyncLLM], reference: Callable[[list[int], int, bool], list[int]], engine: str
) -> None:
    llm = open_llm(engine)
    long = SamplingParams(max_tokens=500, ignore_eos=True)

    async def main() -> list[Chunk]:
        stream = llm.generate([5, 6, 7, 8], long)
        first, request_id = await submitted(llm, stream)
        chunks = [await first]
        llm.engine.abort(request_id)
        chunks += [chunk async for chunk in stream]
        return chunks

    chunks = asyncio.run(main())
    assert chunks[-1].finish == "abort"
    assert sum(c.tokens for c in chunks) < long.max_tokens
    after = asyncio.run(llm.complete([9, 10, 11], SamplingParams(max_tokens=6, ignore_eos=True)))
    assert after.token_ids == reference([9, 10, 11], 6, False)


@pytest.mark.parametrize("engine", ENGINES)
def test_abort_of_a_waiting_request(open_llm: Callable[..., AsyncLLM], engine: str) -> None:
    llm = open_llm(engine, start=False)

    async def main() -> Chunk:
        first, request_id = await submitted(llm, llm.generate([5, 6, 7], SamplingParams(max_tokens=4)))
        llm.engine.abort(request_id)
        llm.start()
        return await first

    chunk = asyncio.run(main())
    assert (chunk.finish, chunk.token_ids) == ("abort", [])


@pytest.mark.parametrize("engine", ENGINES)
def test_a_full_queue_raises_engine_full(open_llm: Callable[..., AsyncLLM], engine: str) -> None:
    llm = open_llm(engine, start=False, max_waiting=1)  # never started: requests stay queued

    async def main() -> None:
        first, _ = await submitted(llm, llm.generate([5, 6, 7], SamplingParams(max_tokens=4)))
        with pytest.raises(EngineFull):
            await llm.complete([5, 6, 7], SamplingParams(max_tokens=4))
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)

    asyncio.run(main())


@pytest.mark.parametrize("engine", ENGINES)
def test_prompt_plus_max_tokens_over_the_context_is_refused(
    open_llm: Callable[..., AsyncLLM], engine: str
) -> None:
    llm = open_llm(engine, start=False)
    limit = llm.context_limit
    with pytest.raises(ValueError, match=rf"max_tokens \({limit}\) exceed the context of {limit} tokens"):
        llm.engine.submit([5, 6], SamplingParams(max_tokens=limit))
    with pytest.raises(ValueError, match="the prompt is empty"):
        llm.engine.submit([], SamplingParams(max_tokens=1))


def test_transformers_engine_refuses_sampling(open_llm: Callable[..., AsyncLLM]) -> None:
    llm = open_llm("transformers", start=False)
    with pytest.raises(ValueError, match=r"greedy requests only.*use engine 'ours' or 'naive'"):
        llm.engine.submit([5, 6], SamplingParams(max_tokens=4, temperature=0.8))


def test_naive_engine_seeded_sampling_repeats(open_llm: Callable[..., AsyncLLM]) -> None:
    llm = open_llm("naive")
    params = SamplingParams(max_tokens=24, temperature=1.5, seed=7, ignore_eos=True)

    async def main() -> list[Any]:
        return await asyncio.gather(*[llm.complete([5, 6, 7], params) for _ in range(3)])

    first, second, third = asyncio.run(main())
    assert first.token_ids == second.token_ids == third.token_ids
    other = asyncio.run(llm.complete([5, 6, 7], SamplingParams(max_tokens=24, temperature=1.5, seed=8)))
    assert other.token_ids != first.token_ids  # near-uniform logits: another seed draws other tokens
