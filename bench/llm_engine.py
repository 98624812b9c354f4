"""In-process benchmark of the LLM engines (no HTTP): kernel check, decode-step times, offline and
open-loop throughput. Prints one JSON document; the HTTP-level numbers come from `ai-how bench serve`.

    python bench/llm_engine.py --build-smollm /tmp/smollm --engine ours --requests 4096 --rates 1000,3000
    python bench/llm_engine.py --model-dir DIR --engine transformers --requests 512 --rates ''

Workload: prompts of --input random token ids, exactly --output new tokens (ignore_eos), greedy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def build_smollm(root: Path) -> Path:
    from ai_how.workloads.llm_data import SMOLLM_135M_SHAPE, build_tiny_llama

    if (root / "model" / "config.json").exists():
        return root / "model"
    root.mkdir(parents=True, exist_ok=True)
    data = root / "train.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"q {i}"}, {"role": "assistant", "content": f"a {i}"}]}
        for i in range(50)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = build_tiny_llama(data, root / "model", shape=SMOLLM_135M_SHAPE)
    # Random weights pick ids across the whole 49,152-token vocabulary; give every id a text, so
    # streamed responses carry text as a real checkpoint's would (the tokenizer trained here is tiny).
    # The texts go into the BPE model's vocabulary, as a real tokenizer's do: as 49k "added tokens"
    # the tokenizer took ~10 s to load, a cold-start cost no real checkpoint has.
    path = model / "tokenizer.json"
    spec = json.loads(path.read_text())
    vocab = spec["model"]["vocab"]
    used = 1 + max([*vocab.values(), *(t["id"] for t in spec.get("added_tokens", []))])
    for i in range(SMOLLM_135M_SHAPE["vocab_size"] - used):
        vocab[f"<t{i}>"] = used + i
    path.write_text(json.dumps(spec))
    return model


def kernel_check() -> dict[str, Any]:
    import torch

    from ai_how.serving.engine import attention

    torch.manual_seed(0)
    out: dict[str, Any] = {}
    for dtype in (torch.bfloat16, torch.float32):
        b, hq, hkv, d, n = 37, 9, 3, 64, 5000
        q = torch.randn(b, hq, d, device="cuda", dtype=dtype)
        k = torch.randn(n, hkv, d, device="cuda", dtype=dtype)
        v = torch.randn(n, hkv, d, device="cuda", dtype=dtype)
        lengths = torch.randint(1, 130, (b,), device="cuda")
        slots = torch.randint(0, n - 130, (b,), device="cuda")
        fast = attention.decode(q, k, v, slots, lengths, 0.125)
        ref = attention.decode_reference(q.float(), k.float(), v.float(), slots, lengths, 0.125)
        out[str(dtype)] = float((fast.float() - ref).abs().max())
    return out


def decoder_check(llm: Any) -> dict[str, Any]:
    """The fused decode step against the eager PyTorch one on the same cache contents."""
    import torch

    engine = llm.engine
    decoder, cache = engine.decoder, engine.cache
    torch.manual_seed(0)
    batch, context = 64, 40
    slots = torch.arange(batch, device="cuda") * 128
    prompts = torch.randint(100, 1000, (batch, context), device="cuda")
    lengths = torch.full((batch,), context, device="cuda")
    lengths[::2] = context - 7  # ragged prompts: padding rows must not disturb the others
    with torch.inference_mode():
        eager_first = decoder.prefill(prompts, lengths, slots, cache, fused=False)
        fused_first = decoder.prefill(prompts, lengths, slots, cache, fused=True)
        tokens = torch.randint(100, 1000, (batch,), device="cuda")
        positions = lengths.clone()
        eager = decoder.decode(tokens, positions, slots, cache, fused=False)
        fused = decoder.decode(tokens, positions, slots, cache, fused=True)
    checks: dict[str, Any] = {}
    graphs = engine.prefill_graphs
    if graphs is not None and graphs.graphs:  # the captured prefill against the eager fused one
        host = [t.cpu().numpy() for t in (prompts[:37, :33], lengths[:37], slots[:37])]
        host[1] = host[1].clip(max=33)
        with torch.inference_mode():
            replayed = graphs.run(*host)
            assert replayed is not None
            replayed = replayed.clone()
            eager_bucket = decoder.prefill(*(torch.from_numpy(h).cuda() for h in host), cache, fused=True)
        checks["prefill_graph_max_abs_logit_diff"] = float((replayed - eager_bucket).abs().max())
        checks["prefill_graph_argmax_agree"] = float(
            (replayed.argmax(-1) == eager_bucket.argmax(-1)).float().mean()
        )
        checks["prefill_ms"] = prefill_times(engine, decoder, cache)
    return checks | {
        "prefill_max_abs_logit_diff": float((eager_first - fused_first).abs().max()),
        "prefill_argmax_agree": float((eager_first.argmax(-1) == fused_first.argmax(-1)).float().mean()),
        "max_abs_logit_diff": float((eager - fused).abs().max()),
        "logit_scale": float(eager.abs().max()),
        "argmax_agree": float((eager.argmax(-1) == fused.argmax(-1)).float().mean()),
    }


def prefill_times(engine: Any, decoder: Any, cache: Any) -> dict[str, Any]:
    """Eager vs replayed prefill of 32-token prompts, in ms, per batch (graph replay includes the upload)."""
    import numpy as np
    import torch

    times: dict[str, Any] = {}
    for rows in (8, 64, 256):
        prompts = np.random.default_rng(0).integers(100, 1000, (rows, 32))
        lengths = np.full(rows, 32)
        slots = np.arange(rows) * 128
        device = [torch.from_numpy(a).cuda() for a in (prompts, lengths, slots)]
        row = {}
        calls = {
            "eager": lambda device=device: decoder.prefill(*device, cache),
            "graph": lambda p=prompts, n=lengths, s=slots: engine.prefill_graphs.run(p, n, s),
        }
        for name, call in calls.items():
            with torch.inference_mode():
                for _ in range(3):
                    call()
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(20):
                    call()
                host_s = (time.perf_counter() - start) / 20
                torch.cuda.synchronize()
            row[name] = round((time.perf_counter() - start) / 20 * 1000, 3)
            row[name + "_host"] = round(host_s * 1000, 3)
        times[str(rows)] = row
    return times


def kernel_profile(llm: Any, batch: int = 1024, context: int = 64) -> list[list[Any]]:
    """Where the GPU time of one decode step goes (eager fused step at ``batch`` rows, each with
    ``context`` cached tokens): the top kernels' total microseconds over 10 steps, per step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    engine = llm.engine
    decoder, cache = engine.decoder, engine.cache
    batch = min(batch, engine.max_batch)
    tokens = torch.randint(100, 1000, (batch,), device="cuda")
    positions = torch.full((batch,), context, device="cuda")
    slots = torch.arange(batch, device="cuda") * 128
    with torch.inference_mode():
        for _ in range(3):
            decoder.decode(tokens, positions, slots, cache).argmax(-1)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                decoder.decode(tokens, positions, slots, cache).argmax(-1)
            torch.cuda.synchronize()
    rows = [
        [e.key[:70], round(e.device_time_total / 10, 1), e.count // 10]
        for e in sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)
        if e.device_time_total > 0
    ]
    return rows[:14]


def step_times(llm: Any, positions: int = 64) -> dict[str, float]:
    import torch

    engine = llm.engine
    graphs = engine.graphs
    if graphs is None:
        return {}
    times = {}
    for size in graphs.sizes:
        if size < 16:
            continue
        tokens = torch.zeros(size, dtype=torch.long, device="cuda")
        pos = torch.full((size,), positions, dtype=torch.long, device="cuda")
        slots = torch.full(
            (size,), engine.cache.scratch.start - positions - 1, dtype=torch.long, device="cuda"
        )
        for _ in range(3):
            graphs.run(tokens, pos, slots)
        torch.cuda.synchronize()
        start = time.perf_counter()
        reps = 50
        for _ in range(reps):
            graphs.run(tokens, pos, slots)
        torch.cuda.synchronize()
        times[str(size)] = round((time.perf_counter() - start) / reps * 1000, 3)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def offline(llm: Any, prompts: list[list[int]], output: int) -> dict[str, Any]:
    from ai_how.serving.engine.protocol import SamplingParams

    params = SamplingParams(max_tokens=output, ignore_eos=True)
    start = time.perf_counter()
    answers = await asyncio.gather(*(llm.complete(p, params) for p in prompts))
    wall = time.perf_counter() - start
    tokens = sum(len(a.token_ids) for a in answers)
    return {
        "requests": len(prompts),
        "wall_s": round(wall, 3),
        "req_per_s": round(len(prompts) / wall, 1),
        "output_tok_per_s": round(tokens / wall, 1),
        "all_exact_length": all(len(a.token_ids) == output for a in answers),
    }


async def open_loop(
    llm: Any, rate: float, duration: float, input_len: int, output: int, vocab: int
) -> dict[str, Any]:
    from ai_how.serving.engine.protocol import SamplingParams

    rng = random.Random(1)
    params = SamplingParams(max_tokens=output, ignore_eos=True)
    from ai_how.serving.engine.protocol import EngineFull

    latencies: list[float] = []
    ttfts: list[float] = []
    rejected: list[int] = []

    async def one() -> None:
        prompt = [rng.randrange(100, vocab) for _ in range(input_len)]
        start = time.perf_counter()
        first = 0.0
        try:
            async for chunk in llm.generate(prompt, params):
                if not first and chunk.token_ids:
                    first = time.perf_counter() - start
        except EngineFull:
            rejected.append(1)
            return
        latencies.append(time.perf_counter() - start)
        ttfts.append(first)

    tasks = []
    start = time.perf_counter()
    next_at = start
    while next_at - start < duration:
        now = time.perf_counter()
        if now < next_at:
            await asyncio.sleep(next_at - now)
        tasks.append(asyncio.ensure_future(one()))
        next_at += rng.expovariate(rate)
    sent_wall = time.perf_counter() - start
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    return {
        "target_rate": rate,
        "sent": len(tasks),
        "rejected_queue_full": len(rejected),
        "send_rate": round(len(tasks) / sent_wall, 1),
        "achieved_req_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "ttft_p50_ms": round(percentile(ttfts, 0.5) * 1000, 1),
        "ttft_p95_ms": round(percentile(ttfts, 0.95) * 1000, 1),
        "mean_batch": round(statistics.fmean(_batches(llm)), 1) if _batches(llm) else None,
    }


def _batches(llm: Any) -> list[int]:
    hist = getattr(llm.engine.stats, "batch_histogram", {})
    return [size for size, count in hist.items() for _ in range(min(count, 1000))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model-dir", type=Path)
    p.add_argument(
        "--build-smollm", type=Path, help="build the SmolLM-135M architecture (random weights) here"
    )
    p.add_argument("--engine", default="ours")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-batch", type=int, default=None)
    p.add_argument("--requests", type=int, default=1024)
    p.add_argument("--input", type=int, default=32)
    p.add_argument("--output", type=int, default=64)
    p.add_argument("--rates", default="", help="open-loop rates, comma separated")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--stream-interval", type=int, default=1)
    args = p.parse_args()
    import torch

    from ai_how.serving.engine.loader import load_llm

    model_dir = args.model_dir or build_smollm(args.build_smollm)
    report: dict[str, Any] = {
        "engine": args.engine,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    if torch.cuda.is_available() and args.engine == "ours":
        report["kernel_max_abs_err"] = kernel_check()
    started = time.perf_counter()
    llm = load_llm(
        model_dir,
        "bench",
        engine=args.engine,
        device=args.device,
        max_batch=args.max_batch,
        max_waiting=1 << 20,  # the offline run queues every request at once
        stream_interval=args.stream_interval,
        process="no",  # this benchmark reads the engine's graphs and decoder directly
    )
    loaded = time.perf_counter()
    llm.engine.warm_up()
    report["load_s"] = round(loaded - started, 2)
    report["warmup_s"] = round(time.perf_counter() - loaded, 2)
    report["prefill_capture_s"] = round(getattr(llm.engine, "prefill_capture_s", 0.0), 2)
    if args.engine == "ours" and torch.cuda.is_available():
        report["fused_vs_eager"] = decoder_check(llm)
    report["decode_step_ms"] = step_times(llm) if args.engine == "ours" else {}
    if args.engine == "ours" and torch.cuda.is_available():
        report["decode_kernels_us"] = kernel_profile(llm)
    llm.start()
    vocab = len(llm.tokenizer)
    rng = random.Random(0)
    prompts = [[rng.randrange(100, vocab) for _ in range(args.input)] for _ in range(args.requests)]
    # tokenizer vocab may be smaller than the model's; ids < len(tokenizer) are valid for both
    report["offline"] = asyncio.run(offline(llm, prompts[: max(8, args.requests // 8)], args.output))  # warm
    report["offline"] = asyncio.run(offline(llm, prompts, args.output))
    print(json.dumps(report), file=sys.stderr, flush=True)
    report["open_loop"] = []
    for rate in [float(r) for r in args.rates.split(",") if r]:
        report["open_loop"].append(
            asyncio.run(open_loop(llm, rate, args.duration, args.input, args.output, vocab))
        )
        print(json.dumps(report["open_loop"][-1]), file=sys.stderr, flush=True)
    llm.stop()
    print(json.dumps(report, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
