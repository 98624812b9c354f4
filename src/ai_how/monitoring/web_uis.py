"""Where to look: the web UIs a config runs (MLflow, Prometheus, Alertmanager, Grafana) and the latest
run report, each asked whether it answers, and opened in a browser only where there is one.

Every probe has a short timeout and runs beside the others, and a browser is started from a thread
that is not waited for past a few seconds, so this never hangs, whatever runs or does not.
"""

from __future__ import annotations

import os
import sys
import threading
import webbrowser
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ai_how.config.models import ClusterConfig
from ai_how.monitoring.report import latest_report
from ai_how.procs import http_ok
from ai_how.redact import redact

PROBE_TIMEOUT_S = 3.0
OPEN_WAIT_S = 5.0
START_STACK = "start it with `make mlops-stack` (ai-how stack up -c CONFIG)"


@dataclass
class WebUi:
    name: str
    url: str  # what is shown and opened (passwords masked)
    up: bool = False
    hint: str = ""  # how to get it when it is not up
    opened: bool = False
    health_url: str = ""

    def to_json(self) -> dict[str, Any]:
        shown = asdict(self)
        shown.pop("health_url")
        return shown


def _http(host: str, port: int) -> str:
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '', '::') else host}:{port}"


def web_uis(config: ClusterConfig, state_dir: Path) -> list[WebUi]:
    """What the config runs, probed (in parallel), then the latest report page."""
    from ai_how.tracking import tracking_uri_of

    found: list[WebUi] = []
    if config.mlops.mlflow.enabled:
        uri = tracking_uri_of(config).rstrip("/")
        hint = START_STACK if config.mlops.mlflow.tracking_uri is None else "check mlops.mlflow.tracking_uri"
        found.append(WebUi("MLflow UI", redact(uri), hint=hint, health_url=f"{uri}/health"))
    monitoring = config.monitoring
    if monitoring.prometheus.enabled:
        url = _http(monitoring.prometheus.host, monitoring.prometheus.port)
        found.append(WebUi("Prometheus", url, hint=START_STACK, health_url=f"{url}/-/healthy"))
        if monitoring.alertmanager.enabled:
            url = _http(monitoring.alertmanager.host, monitoring.alertmanager.port)
            found.append(WebUi("Alertmanager", url, hint=START_STACK, health_url=f"{url}/-/healthy"))
    if monitoring.grafana.enabled and monitoring.grafana.url:
        url = monitoring.grafana.url.rstrip("/")
        found.append(
            WebUi("Grafana", redact(url), hint="check monitoring.grafana.url", health_url=f"{url}/api/health")
        )
    with ThreadPoolExecutor(max_workers=max(1, len(found))) as pool:
        answers = list(pool.map(lambda ui: http_ok(ui.health_url, PROBE_TIMEOUT_S), found))
    for ui, up in zip(found, answers, strict=True):
        ui.up = up
    page = latest_report(state_dir)
    if page is not None:
        found.append(WebUi("latest run report", page.resolve().as_uri(), up=True))
    else:
        found.append(WebUi("latest run report", "", hint="write one with `ai-how report latest --html`"))
    return found


def browser_available(env: Mapping[str, str] | None = None) -> bool:
    """A graphical session (or an explicit $BROWSER) and a browser Python can start."""
    env = os.environ if env is None else env
    graphical = bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")) or sys.platform in ("darwin", "win32")
    if not (graphical or env.get("BROWSER")):
        return False
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def open_in_browser(uis: list[WebUi]) -> None:
    """Open each UI that answers; a browser that blocks (a console one) is left running, not waited for."""
    for ui in uis:
        if not ui.up:
            continue
        result: list[bool] = []
        opener = threading.Thread(target=_open_tab, args=(ui.url, result), daemon=True)
        opener.start()
        opener.join(OPEN_WAIT_S)
        ui.opened = bool(result[0]) if result else True  # still starting: it was launched


def _open_tab(url: str, result: list[bool]) -> None:
    result.append(webbrowser.open_new_tab(url))
