"""Reading Prometheus text exposition: what verify uses to prove that the counters moved."""

from __future__ import annotations

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
