"""A stand-in Kubernetes API server: a real HTTP server answering with recorded objects (fixtures/api/).

No kube-apiserver can run here (no binary in any registry, no containers), so the `kubernetes` client
under test talks HTTP to this one instead. It serves what `ai_how.kube.health` reads (`GET /version`,
`GET /api/v1/nodes`, `GET /api/v1/pods`, `GET /api/v1/namespaces/NS/pods`), checks the bearer token
like a real server (401 `Status` otherwise), and applies `PATCH /api/v1/nodes/NAME` as a JSON merge
patch (RFC 7386, what the API server does for `application/merge-patch+json`), recording every patch.

Any other resource path (`/api/v1/namespaces/NS/PLURAL/NAME`, `/apis/GROUP/VERSION/[namespaces/NS/]PLURAL`)
is a generic object store with the API server's verbs and answers: GET an object or a list, POST
(409 AlreadyExists), PATCH as merge patch or server-side apply (`application/apply-patch+yaml`, which
creates the object when absent, records the `fieldManager`, and drops fields an apply leaves out, as
server-side apply does for fields only that manager owned), DELETE (404 NotFound), `metadata.generation`
bumped when `spec` changes, `resourceVersion`/`uid`/`creationTimestamp` set by the server, and events
listed by `fieldSelector=involvedObject.name=...`. A controller can be given per plural: it runs on every
GET of such an object and writes its `status` (and events), as KServe's controller would.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
    # The generic store: (prefix, namespace or "", plural, name) -> object; prefix is "api/v1" or
    # "apis/GROUP/VERSION". Controllers: plural -> f(api, object), run on each GET of such an object.
    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    controllers: dict[str, Callable[[StandinApi, dict[str, Any]], None]] = field(default_factory=dict)
    applies: list[dict[str, Any]] = field(default_factory=list)  # {"path", "field_manager", "force"}
    fail: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)  # (verb, path) -> code, reason
    _node_gets: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _versions: Iterator[int] = field(default_factory=lambda: itertools.count(1000))

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

    # ------------------------------------------------------------------ generic objects

    def find(self, plural: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        """The stored object, whatever its group (tests look objects up by plural and name)."""
        for (_, ns, kind_plural, obj_name), obj in self.objects.items():
            if (ns, kind_plural, obj_name) == (namespace, plural, name):
                return obj
        return None

    def put(self, prefix: str, namespace: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as the server would on create (tests use it to seed existing objects)."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", "2026-12-07T09:00:00Z")
        meta["generation"] = 1
        meta["resourceVersion"] = str(next(self._versions))
        if namespace:
            meta["namespace"] = namespace
        self.objects[(prefix, namespace, plural, meta["name"])] = obj
        return obj

    def add_event(self, obj: dict[str, Any], reason: str, message: str, kind_of: str = "Warning") -> None:
        meta = obj["metadata"]
        self.events.append(
            {
                "metadata": {
                    "name": f"{meta['name']}.{len(self.events)}",
                    "namespace": meta.get("namespace"),
                },
                "involvedObject": {
                    "kind": obj.get("kind"),
                    "name": meta["name"],
                    "namespace": meta.get("namespace"),
                },
                "reason": reason,
                "message": message,
                "type": kind_of,
                "count": 1,
                "lastTimestamp": "2026-12-07T09:00:05Z",
            }
        )

    def _update(self, key: tuple[str, str, str, str], new: dict[str, Any]) -> dict[str, Any]:
        old = self.objects[key]
        meta = new.setdefault("metadata", {})
        for kept in ("uid", "creationTimestamp", "namespace"):
            if kept in old["metadata"]:
                meta[kept] = old["metadata"][kept]
        meta["generation"] = old["metadata"].get("generation", 1) + (new.get("spec") != old.get("spec"))
        meta["resourceVersion"] = str(next(self._versions))
        if "status" in old and "status" not in new:
            new["status"] = old["status"]
        self.objects[key] = new
        return new

    def handle(
        self, verb: str, path: str, query: dict[str, list[str]], content_type: str, body: Any
    ) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3:
            prefix, rest = "/".join(parts[:2]), parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            prefix, rest = "/".join(parts[:3]), parts[3:]
        else:
            return 404, status(404, "NotFound", "the server could not find the requested resource")
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 2:
            return 404, status(404, "NotFound", "the server could not find the requested resource")
        plural, name = rest[0], (rest[1] if len(rest) == 2 else None)
        failure = self.fail.get((verb, path))
        if failure is not None:
            return failure[0], status(failure[0], failure[1], f"{plural} {name}: {failure[1]}")
        with self._lock:
            if plural == "events" and verb == "GET" and name is None:
                return 200, self._event_list(namespace, query)
            key = (prefix, namespace, plural, name or "")
            if verb == "GET" and name is None:
                items = [
                    o
                    for (p, ns, pl, _), o in self.objects.items()
                    if (p, pl) == (prefix, plural) and (not namespace or ns == namespace)
                ]
                for selector in query.get("labelSelector", []):
                    wanted = dict(term.split("=", 1) for term in selector.split(","))
                    items = [
                        o
                        for o in items
                        if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
                    ]
                return 200, {
                    "kind": "List",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": "1"},
                    "items": copy.deepcopy(items),
                }
            if verb == "POST" and name is None:
                name = (body or {}).get("metadata", {}).get("name", "")
                key = (prefix, namespace, plural, name)
                if key in self.objects:
                    return 409, status(409, "AlreadyExists", f'{plural} "{name}" already exists')
                return 201, copy.deepcopy(self.put(prefix, namespace, plural, copy.deepcopy(body)))
            if name is None:
                return 405, status(405, "MethodNotAllowed", "the server does not allow this method")
            if verb == "GET":
                if key not in self.objects:
                    return 404, status(404, "NotFound", f'{plural} "{name}" not found')
                controller = self.controllers.get(plural)
                if controller is not None:
                    controller(self, self.objects[key])
                return 200, copy.deepcopy(self.objects[key])
            if verb == "DELETE":
                if key not in self.objects:
                    return 404, status(404, "NotFound", f'{plural} "{name}" not found')
                del self.objects[key]
                return 200, {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Success",
                    "details": {"name": name},
                }
            if verb == "PATCH" and content_type == "application/apply-patch+yaml":
                manager = (query.get("fieldManager") or [""])[0]
                if not manager:
                    return 422, status(422, "Invalid", "fieldManager is required for apply requests")
                self.applies.append(
                    {"path": path, "field_manager": manager, "force": (query.get("force") or [""])[0]}
                )
                applied = yaml.safe_load(body) if isinstance(body, str) else copy.deepcopy(body)
                if key not in self.objects:
                    return 201, copy.deepcopy(self.put(prefix, namespace, plural, applied))
                # One field manager applies everything here, so the applied object is the whole truth:
                # fields it set before and leaves out now are removed, as server-side apply does.
                applied.pop("status", None)
                return 200, copy.deepcopy(self._update(key, applied))
            if verb == "PATCH" and content_type == "application/merge-patch+json":
                if key not in self.objects:
                    return 404, status(404, "NotFound", f'{plural} "{name}" not found')
                return 200, copy.deepcopy(self._update(key, merge_patch(self.objects[key], body)))
            if verb == "PATCH":
                return 415, status(415, "UnsupportedMediaType", f"the stand-in does not take {content_type}")
            if verb == "PUT":
                if key not in self.objects:
                    return 404, status(404, "NotFound", f'{plural} "{name}" not found')
                return 200, copy.deepcopy(self._update(key, copy.deepcopy(body)))
        return 405, status(405, "MethodNotAllowed", "the server does not allow this method")

    def _event_list(self, namespace: str, query: dict[str, list[str]]) -> dict[str, Any]:
        wanted: dict[str, str] = {}
        for selector in query.get("fieldSelector", []):
            for term in selector.split(","):
                field_name, _, value = term.partition("=")
                wanted[field_name] = value

        def matches(event: dict[str, Any]) -> bool:
            involved = event["involvedObject"]
            if namespace and event["metadata"].get("namespace") != namespace:
                return False
            return all(involved.get(f.removeprefix("involvedObject.")) == v for f, v in wanted.items())

        items = [e for e in self.events if matches(e)]
        return {
            "kind": "EventList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "1"},
            "items": copy.deepcopy(items),
        }

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
            elif (
                len(parts) == 5
                and parts[:3] == ["api", "v1", "namespaces"]
                and parts[4] == "pods"
                and api.pods
            ):  # recorded pods (health tests); without them, pods live in the generic store
                self._send(200, api.pod_list(parts[3]))
            else:
                self._generic("GET")

        def _generic(self, verb: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type", "")
            body: Any = None
            if raw:
                text = raw.decode()
                body = text if content_type == "application/apply-patch+yaml" else json.loads(text)
            self._send(*api.handle(verb, url.path.rstrip("/"), parse_qs(url.query), content_type, body))

        def do_POST(self) -> None:
            api.requests.append(f"POST {urlsplit(self.path).path}")
            if self._authorised():
                self._generic("POST")

        def do_PUT(self) -> None:
            api.requests.append(f"PUT {urlsplit(self.path).path}")
            if self._authorised():
                self._generic("PUT")

        def do_DELETE(self) -> None:
            api.requests.append(f"DELETE {urlsplit(self.path).path}")
            if self._authorised():
                self._generic("DELETE")

        def do_PATCH(self) -> None:
            path = self.path.split("?", 1)[0]
            api.requests.append(f"PATCH {path}")
            if not self._authorised():
                return
            parts = path.strip("/").split("/")
            if len(parts) == 4 and parts[:3] == ["api", "v1", "nodes"]:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
                self._send(*api.patch_node(parts[3], self.headers.get("Content-Type", ""), body))
            else:
                self._generic("PATCH")

    return Handler


@contextmanager
def standin_api(
    nodes: list[str] | str = "nodes.json",
    pods: list[str] | str = "pods.json",
    controllers: dict[str, Callable[[StandinApi, dict[str, Any]], None]] | None = None,
) -> Iterator[StandinApi]:
    """Serve the named fixtures on a free loopback port; ``nodes`` as a list is served one per GET."""
    node_files = [nodes] if isinstance(nodes, str) else nodes
    pod_files = [pods] if isinstance(pods, str) else pods
    api = StandinApi(
        node_lists=[load(name) for name in node_files],
        pods=[item for name in pod_files for item in load(name)["items"]],
        controllers=dict(controllers or {}),
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
