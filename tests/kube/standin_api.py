"""A stand-in Kubernetes API server: a real HTTP server answering with recorded objects (fixtures/api/).

No kube-apiserver can run here (no binary in any registry, no containers), so the `kubernetes` client
under test talks HTTP to this one instead. It serves what `ai_how.kube.health` reads (`GET /version`,
`GET /api/v1/nodes`, `GET /api/v1/pods`, `GET /api/v1/namespaces/NS/pods`), checks the bearer token
like a real server (401 `Status` otherwise), and applies `PATCH /api/v1/nodes/NAME` as a JSON merge
patch (RFC 7386, what the API server does for `application/merge-patch+json`), recording every patch.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

FIXTURES = Path(__file__).parent / "fixtures" / "api"
TOKEN = "standin-admin-token"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge key by key, null deletes, anything else (lists included) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A metav1.Status object, as the API server answers errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class StandinApi:
    """The cluster the stand-in serves. ``node_lists``: one NodeList per GET in turn, the last repeated."""

    node_lists: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    version: dict[str, Any] = field(default_factory=lambda: load("version.json"))
    url: str = ""
    patches: list[dict[str, Any]] = field(default_factory=list)  # {"node", "content_type", "body"}
    requests: list[str] = field(default_factory=list)  # "GET /api/v1/nodes", ...
    _node_gets: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current_nodes(self) -> dict[str, Any]:
        return self.node_lists[min(self._node_gets, len(self.node_lists) - 1)]

    def node_list(self) -> dict[str, Any]:
        with self._lock:
            nodes = self.current_nodes()
            if self._node_gets < len(self.node_lists) - 1:
                self._node_gets += 1
            return nodes

    def pod_list(self, namespace: str | None) -> dict[str, Any]:
        items = [p for p in self.pods if namespace is None or p["metadata"]["namespace"] == namespace]
        return {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "48322"},
            "items": items,
        }

    def patch_node(self, name: str, content_type: str, body: Any) -> tuple[int, dict[str, Any]]:
        if content_type != "application/merge-patch+json":
            # The real server would take a strategic merge patch too; ai-how sends merge patches only.
            return 415, status(
                415, "UnsupportedMediaType", f"the stand-in takes merge patches, not {content_type}"
            )
        with self._lock:
            self.patches.append({"node": name, "content_type": content_type, "body": body})
            # Patching changes the node in every list served from now on, as on a real cluster.
            found = None
            for node_list in self.node_lists:
                for i, node in enumerate(node_list["items"]):
                    if node["metadata"]["name"] == name:
                        node_list["items"][i] = merge_patch(node, body)
                        found = node_list["items"][i]
        if found is None:
            return 404, status(404, "NotFound", f'nodes "{name}" not found')
        return 200, found

    def kubeconfig(self, path: Path, *, token: str = TOKEN, server: str | None = None) -> Path:
        """A kubeconfig naming this server, as `kubectl config view --raw` writes one."""
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "standin", "cluster": {"server": server or self.url}}],
                    "users": [{"name": "standin-admin", "user": {"token": token}}],
                    "contexts": [
                        {"name": "standin", "context": {"cluster": "standin", "user": "standin-admin"}}
                    ],
                    "current-context": "standin",
                    "preferences": {},
                },
                sort_keys=False,
            )
        )
        return path


def _handler(api: StandinApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {TOKEN}":
                return True
            self._send(401, status(401, "Unauthorized", "Unauthorized"))
            return False

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")  # the client asks for /version/
            api.requests.append(f"GET {path}")
            if not self._authorised():
                return
            parts = path.strip("/").split("/")
            if path == "/version":
                self._send(200, api.version)
            elif path == "/api/v1/nodes":
                self._send(200, api.node_list())
            elif path == "/api/v1/pods":
                self._send(200, api.pod_list(None))
            elif len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
                self._send(200, api.pod_list(parts[3]))
            else:
                self._send(404, status(404, "NotFound", "the server could not find the requested resource"))

        def do_PATCH(self) -> None:
            path = self.path.split("?", 1)[0]
            api.requests.append(f"PATCH {path}")
            if not self._authorised():
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
            parts = path.strip("/").split("/")
            if len(parts) == 4 and parts[:3] == ["api", "v1", "nodes"]:
                self._send(*api.patch_node(parts[3], self.headers.get("Content-Type", ""), body))
            else:
                self._send(405, status(405, "MethodNotAllowed", "the server does not allow this method"))

    return Handler


@contextmanager
def standin_api(
    nodes: list[str] | str = "nodes.json", pods: list[str] | str = "pods.json"
) -> Iterator[StandinApi]:
    """Serve the named fixtures on a free loopback port; ``nodes`` as a list is served one per GET."""
    node_files = [nodes] if isinstance(nodes, str) else nodes
    pod_files = [pods] if isinstance(pods, str) else pods
    api = StandinApi(
        node_lists=[load(name) for name in node_files],
        pods=[item for name in pod_files for item in load(name)["items"]],
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
