#!/usr/bin/env bash
# The GPU benchmark of docs/performance.md, on a machine with torch + CUDA + Triton and the wheels in .whl/
# (fastapi, uvicorn, kserve and their dependencies; see docs/performance.md). Writes under $OUT.
#   OUT=/tmp/out PART=engine|http|all|coldstart [SKIP_BASELINES=1] [SKIP_COLDSTART=1] [COLDSTART_RUNS=2] bash bench/gpu_serving.sh
set -uo pipefail
OUT=${OUT:-/tmp/ai-how-bench}; PART=${PART:-all}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  python3 -m compileall -q -j 8 /tmp/site > /dev/null 2>&1  # what pip does at install time
  export PYTHONPATH=/tmp/site:$PWD/src:$PWD PATH=/tmp/site/bin:$PATH
else
  export PYTHONPATH=$PWD/src:$PWD
fi
MODEL=/tmp/smollm
ENGINE_ARGS=${ENGINE_ARGS:---requests 4096 --rates 1000,2000,3000 --duration 6}
if [ "$PART" = engine ] || [ "$PART" = all ]; then
  python3 bench/llm_engine.py --build-smollm $MODEL --engine ours $ENGINE_ARGS > "$OUT/engine_ours.json" 2> "$OUT/engine_ours.err"
  grep -v Loading "$OUT/engine_ours.err" | tail -6
fi
[ "$PART" = engine ] && exit 0
python3 bench/llm_engine.py --build-smollm $MODEL --requests 8 --rates '' > /dev/null 2>&1  # builds the model once
python3 - <<PY
from pathlib import Path
from ai_how.objectstore.base import open_store
from ai_how.objectstore.sync import sync_directory
store, _ = open_store("file:///tmp/store")
sync_directory(Path("$MODEL/model"), store, "smollm/v1", meta={"version": 1})
PY
serve() {  # serve ENGINE PORT EXTRA...
  local engine=$1 port=$2; shift 2
  python3 -m ai_how.serving.server --model smollm=file:///tmp/store/smollm/v1 --port "$port" --engine "$engine" \
    --cache-dir /tmp/cache "$@" > "$OUT/server_$engine.log" 2>&1 &
  for _ in $(seq 1 240); do curl -sf "http://127.0.0.1:$port/v2/health/ready" > /dev/null && return 0; sleep 0.5; done
  tail -20 "$OUT/server_$engine.log"; return 1
}
bench() { python3 -c "from ai_how.cli.main import run; run()" bench serve "$@"; }
if [ "$PART" != coldstart ]; then
HTTP_ARGS=${HTTP_ARGS:---rate 1000,2000,3000,4000 --duration 8 --processes 6}
serve ours 8080 --stream-interval ${STREAM_INTERVAL:-8} --no-access-log --http-workers ${HTTP_WORKERS:-6} \
  --max-batch ${MAX_BATCH:-512} || exit 1
for _ in $(seq 1 120); do  # the HTTP workers attach after the first process is ready
  [ "$(grep -c 'HTTP worker of' "$OUT/server_ours.log")" -ge $((${HTTP_WORKERS:-6} - 1)) ] && break; sleep 0.5
done; grep -c 'HTTP worker of' "$OUT/server_ours.log"
bench --url http://127.0.0.1:8080 --model smollm --protocol openai-completions $HTTP_ARGS --out "$OUT/http_ours" --json > "$OUT/http_ours.json" 2> "$OUT/http_ours.err"
tail -3 "$OUT/http_ours.err"
bench --url http://127.0.0.1:8080 --model smollm --protocol openai-completions --stream ${STREAM_ARGS:-$HTTP_ARGS} --out "$OUT/http_ours_stream" --json > "$OUT/http_ours_stream.json" 2> "$OUT/http_ours_stream.err"
tail -3 "$OUT/http_ours_stream.err"
grep -E "^(ai_how_|request_predict)" <(curl -s http://127.0.0.1:8080/metrics) | grep -v bucket | head -20 > "$OUT/metrics_ours.txt"
loop_stats() {  # the engine loop per second of one load: steps, mean batch, device busy, host waiting
  curl -s http://127.0.0.1:8080/metrics > "$OUT/metrics_before.txt"
  bench --url http://127.0.0.1:8080 --model smollm --protocol openai-completions --rate "$1" --duration 8 \
    --processes 6 --json > "$OUT/loop_$1.json" 2> /dev/null
  curl -s http://127.0.0.1:8080/metrics > "$OUT/metrics_after.txt"
  python3 - "$OUT" "$1" <<'PY'
import json, sys, pathlib
from prometheus_client.parser import text_string_to_metric_families
def metric_total(text, name, labels):
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
out, rate = pathlib.Path(sys.argv[1]), sys.argv[2]
files = [out / f"metrics_{w}.txt" for w in ("before", "after")]
before, after = (f.read_text() for f in files)
wall = files[1].stat().st_mtime - files[0].stat().st_mtime  # warm-up and drain included
d = lambda name, **labels: metric_total(after, name, labels) - metric_total(before, name, labels)
point = json.loads((out / f"loop_{rate}.json").read_text())["points"][0]
p95 = (point.get("latency_ms") or {}).get("p95") or float("nan")  # none when nothing succeeded
steps, prefills = d("ai_how_engine_steps_total"), d("ai_how_engine_prefills_total")
print(f"loop at {rate} req/s offered ({point['requests_per_s']:.0f} achieved, P95 {p95:.0f} ms):",
      f"{steps / wall:.0f} steps/s, mean batch {d('ai_how_engine_step_rows_total') / max(steps, 1):.0f},",
      f"{prefills / wall:.0f} prefills/s of {d('ai_how_prompt_tokens_total') / max(prefills, 1):.0f} tokens;",
      f"per step: decode {1e3 * d('ai_how_engine_device_seconds_total', phase='decode') / max(steps, 1):.2f} ms on the device;",
      f"prefill {1e3 * d('ai_how_engine_device_seconds_total', phase='prefill') / max(prefills, 1):.2f} ms each;",
      f"loop waiting {100 * d('ai_how_engine_wait_seconds_total') / wall:.0f}% of the time")
PY
}
for rate in ${LOOP_RATES:-}; do loop_stats "$rate"; done
if [ -n "${PROFILE_RATE:-}" ] && command -v py-spy > /dev/null; then  # where the host time goes, under load
  bench --url http://127.0.0.1:8080 --model smollm --protocol openai-completions --rate "$PROFILE_RATE" --duration 12 \
    --processes 6 --json > "$OUT/profile_load.json" 2> /dev/null &
  load=$!; sleep 4
  engine=$(pgrep -f spawn_main | head -1); worker=$(pgrep -f attach-engines | head -1)
  py-spy record --nonblocking --format raw --threads --duration 5 --pid "$engine" -o "$OUT/profile_engine.txt" > /dev/null 2>&1 &
  profiling=$!
  py-spy record --nonblocking --format raw --duration 5 --pid "$worker" -o "$OUT/profile_worker.txt" > /dev/null 2>&1
  wait $profiling $load
fi
kill %1; wait
if [ -z "${SKIP_BASELINES:-}" ]; then
# Baselines, same machine, same HTTP API: transformers' continuous batching, and one generate at a time.
serve transformers 8081 --no-access-log || exit 1
bench --url http://127.0.0.1:8081 --model smollm --protocol openai-completions --rate ${TF_RATES:-40,80} --duration 10 --processes 2 --json > "$OUT/http_transformers.json" 2> "$OUT/http_transformers.err"
tail -2 "$OUT/http_transformers.err"; kill %1; wait
serve naive 8082 --no-access-log || exit 1
bench --url http://127.0.0.1:8082 --model smollm --protocol openai-completions --concurrency 1 --duration 10 --json > "$OUT/http_naive.json" 2> "$OUT/http_naive.err"
tail -2 "$OUT/http_naive.err"; kill %1; wait
fi
fi  # PART=coldstart skips the load above
if [ -z "${SKIP_COLDSTART:-}" ]; then  # process start -> first token, twice (the second with warm caches)
python3 -c "from ai_how.cli.main import run; run()" bench coldstart --model-uri file:///tmp/store/smollm/v1 --name smollm --runs ${COLDSTART_RUNS:-2} --json > "$OUT/coldstart.json" 2> "$OUT/coldstart.err"
tail -2 "$OUT/coldstart.err"
fi
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for name in ("http_ours", "http_ours_stream", "http_transformers", "http_naive"):
    try:
        doc = json.loads((out / f"{name}.json").read_text())
    except Exception as exc:
        print(name, "unreadable:", exc); continue
    for p in doc["points"]:
        keep = {k: p.get(k) for k in ("point", "ok", "errors", "throttled", "timeouts", "dropped", "requests_per_s", "output_tokens_per_s", "client_bound")}
        keep["p50_p95"] = (p["latency_ms"] or {}).get("p50"), (p["latency_ms"] or {}).get("p95")
        keep["ttft_p95"] = (p.get("ttft_ms") or {}).get("p95")
        keep["gpu_util"] = [g.get("util_mean_pct") for g in (p.get("gpu") or {}).get("gpus", [])]
        print(name, json.dumps(keep))
PY
