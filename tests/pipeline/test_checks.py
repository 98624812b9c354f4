"""Verify's building blocks: Prometheus text parsing, and checks that hold under ``python -O``."""

from __future__ import annotations

import subprocess
import sys

from ai_how.pipeline.checks import metric_total

TEXT = """\
# HELP ai_how_requests_total HTTP requests served
# TYPE ai_how_requests_total counter
ai_how_requests_total{code="200",method="POST",route="/v1/models/{model_name}:predict"} 3.0
ai_how_requests_total{code="200",method="GET",route="/v2/health/ready"} 2.0
ai_how_requests_total{code="500",method="POST",route="/v1/models/{model_name}:predict"} 7.0
ai_how_requests_created{code="200",method="GET",route="/v2/health/ready"} 1.7e+09
request_predict_seconds_count{model_name="digits"} 5.0
request_predict_seconds_count{model_name="other"} 11.0
"""


def test_sums_matching_samples_even_with_braces_in_label_values() -> None:
    assert metric_total(TEXT, "ai_how_requests_total", {"code": "200"}) == 5.0
    assert metric_total(TEXT, "ai_how_requests_total", {"route": "/v1/models/{model_name}:predict"}) == 10.0
    assert metric_total(TEXT, "request_predict_seconds_count", {"model_name": "digits"}) == 5.0
    assert metric_total(TEXT, "request_predict_seconds_count") == 16.0
    assert metric_total(TEXT, "missing_metric") == 0.0


def test_a_failing_check_fails_under_python_O() -> None:
    """``python -O`` strips ``assert``: verify's checks must not depend on it."""
    code = (
        "from ai_how.pipeline.checks import _check, expect\n"
        "check = _check('accuracy', lambda: (expect(0.5 >= 0.9, 'accuracy 0.5 < 0.90'), 'ok')[1])\n"
        "print(check.ok, check.detail)\n"
    )
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False accuracy 0.5 < 0.90"
