#!/usr/bin/env bash
# The CPU serving figures of docs/benchmarks.md, on this machine: the tiny LLM's throughput at
# concurrency 1 vs 32, and the digits classifier (V1) against `mlflow models serve` on the same model.
#   OUT=/tmp/cpu-bench bash bench/cpu_serving.sh
set -euo pipefail
OUT=${OUT:-/tmp/ai-how-cpu-bench}; mkdir -p "$OUT"
export DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PATH="$PWD/.venv/bin:$PATH"
PY=.venv/bin/python
$PY - "$OUT" <<'PY'
import shutil, sys
from pathlib import Path
from ai_how import mlflow_models
from tests.serving.llm_fixtures import digits_cnn, synced, tiny_llama
out = Path(sys.argv[1])
print(synced(tiny_llama(out / "llm"), out / "objects", "tiny/v1", 1))
digits = digits_cnn(out / "digits")
print(synced(digits, out / "objects", "digits/v1", 1))
shutil.rmtree(out / "digits-pyfunc", ignore_errors=True)  # this script's own output of an earlier run
mlflow_models.save("classifier", digits, out / "digits-pyfunc")
PY
serve() {  # serve NAME PORT COMMAND...
  local name=$1 port=$2; shift 2
  "$@" > "$OUT/server_$name.log" 2>&1 &
  for _ in $(seq 1 240); do curl -sf "http://127.0.0.1:$port/$READY" > /dev/null && return 0; sleep 0.5; done
  tail -20 "$OUT/server_$name.log"; return 1
}
READY=v2/health/ready serve ours 18080 $PY -m ai_how.serving.server --port 18080 --cache-dir "$OUT/cache" \
  --model "tiny=file://$OUT/objects/tiny/v1" --model "digits=file://$OUT/objects/digits/v1" --no-access-log
READY=ping serve mlflow 18081 mlflow models serve -m "$OUT/digits-pyfunc" --env-manager local -p 18081 -h 127.0.0.1
ai-how bench serve --url http://127.0.0.1:18080 --model tiny --protocol openai-chat --output-tokens 16 \
  --concurrency 1,32 --duration 10 --processes 2 --out "$OUT/bench-llm" --json > "$OUT/llm.json"
# Overload: twice the measured capacity, open loop, while health is polled every 50 ms.
CAPACITY=$($PY -c "import json; print(max(p['requests_per_s'] for p in json.load(open('$OUT/llm.json'))['points']))")
$PY - "$OUT" <<'PY' &
import http.client, json, sys, time
samples = []
end = time.time() + 14
while time.time() < end:  # a new connection per probe, as a kubelet's (no client built per probe:
    start = time.perf_counter()  # httpx.get loads a CA bundle each call, ~30 ms of this machine's CPU)
    conn = http.client.HTTPConnection("127.0.0.1", 18080, timeout=5)
    conn.request("GET", "/v2/health/ready")
    code = conn.getresponse().status
    conn.close()
    samples.append(((time.perf_counter() - start) * 1000, code))
    time.sleep(0.05)
times = sorted(t for t, _ in samples)
json.dump({"samples": len(samples), "codes": sorted({c for _, c in samples}), "p50_ms": times[len(times) // 2],
           "p95_ms": times[int(len(times) * 0.95)], "max_ms": times[-1]}, open(sys.argv[1] + "/health_during_overload.json", "w"))
PY
ai-how bench serve --url http://127.0.0.1:18080 --model tiny --protocol openai-chat --output-tokens 16 \
  --rate "$($PY -c "print(round(2 * $CAPACITY))")" --duration 10 --processes 2 --json > "$OUT/overload.json"
wait %3 || true
cat "$OUT/health_during_overload.json"; echo
ai-how bench serve --url http://127.0.0.1:18080 --model digits --protocol v1 --concurrency 8,64 --duration 10 \
  --processes 2 --compare http://127.0.0.1:18081 --compare-protocol mlflow --out "$OUT/bench-digits" --json > "$OUT/digits.json"
kill %1 %2; wait || true
cat "$OUT/bench-llm/bench.md" "$OUT/bench-digits/bench.md"  # not under llm/ or digits/: those are the models
