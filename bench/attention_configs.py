"""Time the ragged decode-attention kernel's launch configurations on a GPU (and check each).

A configuration: tokens per loop iteration, warps per program, pipeline stages.

The workload of docs/performance.md's decode step: SmolLM-135M's attention shape (9 query heads,
3 KV heads, head dim 64), ``--rows`` sequences whose cached lengths are uniform in 32..96 tokens
(32-token prompts, up to 64 generated), each in its own 128-token slot, 30 layers with their own
caches (so the L2 cache does not hold what a real step reads from HBM). Each configuration runs as
one CUDA graph of 30 kernel calls, like a captured decode step; the figure is its GPU time.

    PYTHONPATH=src python3 bench/attention_configs.py [--rows 1024] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from typing import Any

TOLERANCE = 0.02  # bf16 against the fp32 reference (the default launch: ~0.005)
CONFIGS = [
    *(
        {"block": b, "warps": w, "stages": s}
        for b, w, s in itertools.product((32, 64), (1, 2, 4), (None, 1, 2))
    ),
    {"block": 16, "warps": 1, "stages": None},
    {"block": 16, "warps": 2, "stages": None},
    {"block": 128, "warps": 4, "stages": None},
    {"block": 128, "warps": 8, "stages": None},
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    from ai_how.serving.engine import attention

    if not torch.cuda.is_available():
        print("error: no GPU: this benchmark times CUDA kernels", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    rows, layers, hq, hkv, d, slot = args.rows, args.layers, 9, 3, 64, 128
    bf16 = torch.bfloat16
    caches = [
        (
            torch.randn(rows * slot, hkv, d, device="cuda", dtype=bf16),
            torch.randn(rows * slot, hkv, d, device="cuda", dtype=bf16),
        )
        for _ in range(layers)
    ]
    q = torch.randn(rows, hq, d, device="cuda", dtype=bf16)
    slots = torch.arange(rows, device="cuda") * slot
    lengths = torch.randint(32, 97, (rows,), device="cuda")
    live_bytes = int(lengths.sum()) * hkv * d * 2 * 2 * layers  # K and V, bf16
    reference = attention.decode_reference(
        q.float(), caches[0][0].float(), caches[0][1].float(), slots, lengths, 0.125
    )

    results: list[dict[str, Any]] = []
    for config in CONFIGS:
        launch = attention.Launch(**config)
        try:
            out = attention._decode_triton(q, *caches[0], slots, lengths, 0.125, launch)
            error = float((out.float() - reference).abs().max())
            if error > TOLERANCE:  # a fast wrong answer must not win
                results.append({**config, "failed": f"max error {error:.4f} > {TOLERANCE}"})
                continue
            graph = torch.cuda.CUDAGraph()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for k, v in caches:  # warm every layer once outside the capture
                    attention._decode_triton(q, k, v, slots, lengths, 0.125, launch)
            torch.cuda.current_stream().wait_stream(stream)
            with torch.cuda.graph(graph):
                for k, v in caches:
                    attention._decode_triton(q, k, v, slots, lengths, 0.125, launch)
            for _ in range(3):
                graph.replay()
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            repeats = 20
            begin.record()
            for _ in range(repeats):
                graph.replay()
            end.record()
            end.synchronize()
            us = 1e3 * begin.elapsed_time(end) / repeats
            results.append(
                {
                    **config,
                    "us_per_step": round(us, 1),
                    "GB_per_s": round(live_bytes / us / 1e3, 0),
                    "max_error": error,
                }
            )
        except Exception as exc:  # a configuration Triton refuses (e.g. out of shared memory)
            results.append({**config, "failed": f"{type(exc).__name__}: {str(exc)[:120]}"})
    results.sort(key=lambda r: r.get("us_per_step", float("inf")))
    if args.json:
        print(
            json.dumps(
                {"rows": rows, "layers": layers, "live_MB": live_bytes / 1e6, "results": results}, indent=1
            )
        )
    else:
        print(
            f"{rows} rows x {layers} layers, {live_bytes / 1e6:.0f} MB of live K/V per step; default {attention.LAUNCH}"
        )
        for r in results:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
