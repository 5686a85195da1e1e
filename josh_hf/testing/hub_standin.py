"""A LOCAL STAND-IN for the Hugging Face Hub's HTTP API, for tests only. It is NOT the Hub.

Real Hub uploads cannot run in tests (no network, no account), so :class:`LocalHubStandIn`
serves, on ``127.0.0.1`` and a free port, the few endpoints the real ``huggingface_hub``
client uses to push a model and to load it back:

* ``POST /api/repos/create`` (``create_repo``; 409 when the repo exists, as the Hub answers);
* ``POST /api/validate-yaml`` (``ModelCard.push_to_hub`` / ``validate``);
* ``POST /api/{type}s/{repo}/preupload/{rev}`` and ``POST /api/{type}s/{repo}/commit/{rev}``
  (``upload_folder`` / ``create_commit``): files whose name ends with one of ``lfs_suffixes``
  (``.safetensors``, ``.bin`` by default, like the Hub's ``.gitattributes``) are answered
  ``"lfs"`` and go through the Git LFS batch API (``POST /{repo}.git/info/lfs/objects/batch``
  + a basic-transfer ``PUT``); every other file is ``"regular"`` and arrives inline (base64)
  in the commit. Xet is not served: set ``HF_HUB_DISABLE_XET=1`` (``activate`` does);
* ``GET /api/{type}s/{repo}[/revision/{rev}]`` (``model_info``), ``GET .../tree/{rev}[/{path}]``
  (``list_repo_files`` / ``list_repo_tree``) and ``POST .../paths-info/{rev}``;
* ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` (``hf_hub_download``, hence
  ``from_pretrained`` and ``ModelCard.load``), with the ``X-Repo-Commit``/``ETag`` headers
  (and ``X-Linked-Etag``/``X-Linked-Size`` for LFS files) the client reads.

Everything is kept in memory. Each request is recorded (method, path, headers, body) in
:attr:`LocalHubStandIn.requests` so tests can check what the client sent, e.g. that the
``Authorization`` header carried the token. Unknown endpoints answer 404 and are listed in
:attr:`LocalHubStandIn.unhandled`.

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_HUB_DISABLE_XET`` into
module constants at import time (and its module-level ``HfApi``, behind ``file_exists`` and
friends, keeps the endpoint it saw then), so setting the environment is not enough inside a
running test process: :meth:`LocalHubStandIn.activate` sets the variables *and* patches those
(restoring everything on exit), and points the download cache at a given folder. A test
that runs the client in a subprocess only needs the environment (``hub.environment()``).

Usage::

    with LocalHubStandIn() as hub, hub.activate(cache_dir=tmp_path / "hub-cache"):
        HfApi(token="hf_x").create_repo("someone/model")
        ...
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["LocalHubStandIn", "RecordedRequest", "StandInRepo"]

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


@dataclass
class RecordedRequest:
    """One request the stand-in received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class StandInRepo:
    """A repository held by the stand-in: its files at the head of ``main`` and its commits."""

    repo_id: str
    repo_type: str
    private: bool = False
    files: dict[str, bytes] = field(default_factory=dict)
    lfs: dict[str, str] = field(default_factory=dict)  # path -> sha256 of files uploaded through LFS
    commits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sha(self) -> str:
        """The head commit's id (a fixed fake id before the first commit, as a new Hub repo has one)."""
        return self.commits[-1]["oid"] if self.commits else "0" * 40


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the owning :class:`LocalHubStandIn` (set as ``server.standin``)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every reply sets Content-Length

    @property
    def hub(self) -> LocalHubStandIn:
        return self.server.standin  # type: ignore[attr-defined]

    # -- plumbing ---------------------------------------------------------------------------
    def _body(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body

    def _record(self, body: bytes) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.hub.lock:
            self.hub.requests.append(RecordedRequest(self.command, self.path, headers, body))

    def _send(self, status: int, data: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        # The client reads X-Error-Code / X-Error-Message to raise RepositoryNotFoundError etc.
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json({"error": message}, status, headers)

    def _unhandled(self) -> None:
        with self.hub.lock:
            self.hub.unhandled.append(f"{self.command} {self.path}")
        self._error(404, f"not served by the local Hub stand-in: {self.command} {self.path}")

    def log_message(self, *args: Any) -> None:  # quiet: the test output is not the place for an access log
        pass

    # -- verbs ------------------------------------------------------------------------------
    def do_POST(self) -> None:
        body = self._body()
        self._record(body)
        path = urlsplit(self.path).path
        host = f"http://{self.headers['Host']}"
        if path == "/api/repos/create":
            return self._create_repo(json.loads(body or b"{}"), host)
        if path == "/api/validate-yaml":
            return self._json({"errors": [], "warnings": []})
        if path.endswith("/info/lfs/objects/batch"):
            return self._lfs_batch(json.loads(body), host)
        parsed = self._api_repo_path(path)
        if parsed is not None:
            repo, action, _rest = parsed
            if repo is None:
                return self._error(404, "Repository not found", "RepoNotFound")
            if action == "preupload":
                return self._preupload(repo, json.loads(body))
            if action == "commit":
                return self._commit(repo, body, host)
            if action == "paths-info":
                return self._paths_info(repo, body)
        return self._unhandled()

    def do_PUT(self) -> None:
        body = self._body()
        self._record(b"")  # LFS content: not worth keeping twice
        path = urlsplit(self.path).path
        if path.startswith("/_standin_lfs/"):
            oid = path.rsplit("/", 1)[-1]
            if hashlib.sha256(body).hexdigest() != oid:
                return self._error(400, "LFS object does not match its sha256")
            with self.hub.lock:
                self.hub.lfs_objects[oid] = body
            return self._send(200)
        return self._unhandled()

    def do_GET(self) -> None:
        self._record(b"")
        path = urlsplit(self.path).path
        parsed = self._api_repo_path(path)
        if parsed is not None:
            repo, action, rest = parsed
            if repo is None:
                return self._error(404, "Repository not found", "RepoNotFound")
            if action in ("", "revision"):
                return self._repo_info(repo)
            if action == "tree":
                return self._tree(repo, rest)
            return self._unhandled()
        if "/resolve/" in path:
            return self._resolve(path)
        return self._unhandled()

    def do_HEAD(self) -> None:
        self._record(b"")
        path = urlsplit(self.path).path
        if "/resolve/" in path:
            return self._resolve(path)
        return self._unhandled()

    # -- endpoints --------------------------------------------------------------------------
    def _api_repo_path(self, path: str) -> tuple[StandInRepo | None, str, str] | None:
        """Split ``/api/{type}s/{ns}/{name}[/{action}/{rest}]``; ``None`` if not that shape."""
        parts = path.split("/")
        if len(parts) < 5 or parts[1] != "api" or parts[2] not in _REPO_TYPES:
            return None
        repo_type = _REPO_TYPES[parts[2]]
        repo_id = unquote(f"{parts[3]}/{parts[4]}")
        action = parts[5] if len(parts) > 5 else ""
        rest = unquote("/".join(parts[6:]))
        return self.hub.repos.get((repo_type, repo_id)), action, rest

    def _create_repo(self, payload: dict[str, Any], host: str) -> None:
        repo_type = payload.get("type") or "model"
        name = payload["name"]
        repo_id = f"{payload['organization']}/{name}" if payload.get("organization") else name
        url = f"{host}/{_URL_PREFIX[repo_type]}{repo_id}"
        key = (repo_type, repo_id)
        with self.hub.lock:
            if key in self.hub.repos:
                # The Hub's answer (409 with the URL); create_repo(exist_ok=True) reads the URL from it.
                message = f"You already created this {repo_type} repo"
                return self._json({"error": message, "url": url}, 409, {"X-Error-Message": message})
            private = payload.get("private") or payload.get("visibility") == "private"
            self.hub.repos[key] = StandInRepo(repo_id, repo_type, private=bool(private))
        self._json({"url": url, "name": repo_id})

    def _preupload(self, repo: StandInRepo, payload: dict[str, Any]) -> None:
        files = []
        for f in payload["files"]:
            lfs = f["path"].endswith(self.hub.lfs_suffixes)
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
        self._json({"files": files})

    def _lfs_batch(self, payload: dict[str, Any], host: str) -> None:
        objects = []
        for obj in payload["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.hub.lfs_objects:  # already stored: no action, as on the Hub
                entry["actions"] = {"upload": {"href": f"{host}/_standin_lfs/{obj['oid']}"}}
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _commit(self, repo: StandInRepo, body: bytes, host: str) -> None:
        header: dict[str, Any] = {}
        added: dict[str, bytes] = {}
        added_lfs: dict[str, str] = {}
        deleted: list[tuple[str, bool]] = []
        for line in body.decode().splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                added[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                blob = self.hub.lfs_objects.get(value["oid"])
                if blob is None:
                    return self._error(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                added[value["path"]] = blob
                added_lfs[value["path"]] = value["oid"]
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append((value["path"], key == "deletedFolder"))
        with self.hub.lock:
            for path, is_folder in deleted:
                for existing in list(repo.files):
                    if existing == path or (is_folder and existing.startswith(path.rstrip("/") + "/")):
                        repo.files.pop(existing)
                        repo.lfs.pop(existing, None)
            for path, data in added.items():
                repo.files[path] = data
                repo.lfs.pop(path, None)
            repo.lfs.update(added_lfs)
            # A deterministic id derived from the content (like git, though not git's hash).
            digest = hashlib.sha1(repo.sha.encode() + json.dumps(header, sort_keys=True).encode())
            for path in sorted(repo.files):
                digest.update(path.encode() + b"\0" + repo.files[path])
            oid = digest.hexdigest()
            repo.commits.append({"oid": oid, "summary": header.get("summary", ""),
                                 "description": header.get("description", "")})
        url = f"{host}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{oid}"
        self._json({"commitUrl": url, "commitOid": oid, "success": True})

    def _file_entry(self, repo: StandInRepo, path: str) -> dict[str, Any]:
        data = repo.files[path]
        entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data), "oid": _git_blob_oid(data)}
        if path in repo.lfs:
            entry["lfs"] = {"oid": repo.lfs[path], "size": len(data), "pointerSize": 134}
        return entry

    def _repo_info(self, repo: StandInRepo) -> None:
        self._json({
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": repo.sha,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "tags": [],
            "siblings": [{"rfilename": p, "size": len(d)} for p, d in sorted(repo.files.items())],
            "lastModified": "2024-01-01T00:00:00.000Z",
        })

    def _tree(self, repo: StandInRepo, rest: str) -> None:
        # rest = "{revision}[/{folder}]"; only the head of main is kept, so the revision is not checked.
        query = parse_qs(urlsplit(self.path).query)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        folder = rest.split("/", 1)[1].strip("/") if "/" in rest else ""
        prefix = f"{folder}/" if folder else ""
        if folder and not any(p.startswith(prefix) for p in repo.files):
            return self._error(404, f"{folder} does not exist on main", "EntryNotFound")
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        for path in sorted(repo.files):
            if not path.startswith(prefix):
                continue
            tail = path[len(prefix):]
            if "/" in tail and not recursive:
                folders.add(prefix + tail.split("/", 1)[0])
                continue
            if recursive:  # the Hub lists the intermediate folders too
                parts = tail.split("/")[:-1]
                folders.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts)))
            entries.append(self._file_entry(repo, path))
        entries += [{"type": "directory", "path": f, "oid": "0" * 40} for f in sorted(folders)]
        self._json(entries)

    def _paths_info(self, repo: StandInRepo, body: bytes) -> None:
        try:
            paths = json.loads(body)["paths"]
        except (ValueError, KeyError):  # sent as a form: paths=a&paths=b
            paths = parse_qs(body.decode()).get("paths", [])
        self._json([self._file_entry(repo, p) for p in paths if p in repo.files])

    def _resolve(self, path: str) -> None:
        # /{ns}/{name}/resolve/{rev}/{file} for models, /datasets/{ns}/{name}/resolve/... for datasets
        head, _, tail = path.lstrip("/").partition("/resolve/")
        repo_type = "model"
        for prefix, kind in (("datasets/", "dataset"), ("spaces/", "space")):
            if head.startswith(prefix):
                repo_type, head = kind, head[len(prefix):]
        repo = self.hub.repos.get((repo_type, unquote(head)))
        if repo is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        _revision, _, filename = tail.partition("/")
        filename = unquote(filename)
        if filename not in repo.files:
            return self._error(404, "Entry not found", "EntryNotFound")
        data = repo.files[filename]
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{_git_blob_oid(data)}"'}
        if filename in repo.lfs:
            headers.update({"X-Linked-Etag": f'"{repo.lfs[filename]}"', "X-Linked-Size": str(len(data))})
        self._send(200, data, headers, content_type="application/octet-stream")


def _git_blob_oid(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub reports as a regular file's ``oid``/etag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LocalHubStandIn:
    """A local, in-memory stand-in of the Hub's HTTP API on ``127.0.0.1`` (see the module doc).

    Start it with ``with LocalHubStandIn() as hub:`` (or :meth:`start`/:meth:`stop`); point
    the client at it with :meth:`activate`. ``repos`` maps ``(repo_type, repo_id)`` to
    :class:`StandInRepo`; ``requests`` records what the client sent.
    """

    def __init__(self, *, lfs_suffixes: tuple[str, ...] = (".safetensors", ".bin")) -> None:
        self.lfs_suffixes = tuple(lfs_suffixes)
        self.repos: dict[tuple[str, str], StandInRepo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[str] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>`` (the value for ``HF_ENDPOINT``)."""
        if self._server is None:
            raise RuntimeError("the stand-in is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> LocalHubStandIn:
        """Serve on a free port of 127.0.0.1 in a daemon thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.standin = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="local-hub-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def repo(self, repo_id: str, repo_type: str = "model") -> StandInRepo:
        """The stored repo (``KeyError`` if it was never created)."""
        return self.repos[(repo_type, repo_id)]

    def environment(self) -> dict[str, str]:
        """The environment variables that point a *new* process's ``huggingface_hub`` here."""
        return {
            "HF_ENDPOINT": self.endpoint,
            "HF_HUB_DISABLE_XET": "1",  # the stand-in serves no Xet storage
            "HF_HUB_OFFLINE": "0",  # the test suite sets offline mode; the stand-in is local
            "TRANSFORMERS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }

    @contextlib.contextmanager
    def activate(self, *, cache_dir: str | os.PathLike[str] | None = None) -> Iterator[LocalHubStandIn]:
        """Point ``huggingface_hub`` (and so ``transformers``/``peft``) at this stand-in.

        Sets ``HF_ENDPOINT``, ``HF_HUB_DISABLE_XET=1``, ``HF_HUB_OFFLINE=0``,
        ``TRANSFORMERS_OFFLINE=0`` and ``HF_HUB_DISABLE_TELEMETRY=1``, patches the matching
        ``huggingface_hub.constants`` (read once at import), and when ``cache_dir`` is given,
        sends downloads there (``HF_HUB_CACHE``) so nothing lands in the user's cache.
        Everything is restored on exit.
        """
        from huggingface_hub import constants, hf_api

        endpoint = self.endpoint
        env = self.environment()
        patches: dict[str, Any] = {
            "ENDPOINT": endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_XET": True,
            "HF_HUB_DISABLE_TELEMETRY": True,
        }
        if cache_dir is not None:
            env["HF_HUB_CACHE"] = str(Path(cache_dir))
            patches["HF_HUB_CACHE"] = str(Path(cache_dir))
        old_env = {k: os.environ.get(k) for k in env}
        old_constants = {k: getattr(constants, k) for k in patches}
        # The module-level HfApi behind huggingface_hub.file_exists, model_info, ... (used by peft)
        # took its endpoint at import.
        default_api = getattr(hf_api, "api", None)
        old_api_endpoint = getattr(default_api, "endpoint", None)
        # transformers keeps its own copy of the cache path for its default cache_dir.
        tf_hub = _transformers_hub_module()
        old_tf_cache = getattr(tf_hub, "HF_HUB_CACHE", None) if tf_hub is not None else None
        os.environ.update(env)
        for key, value in patches.items():
            setattr(constants, key, value)
        if tf_hub is not None and cache_dir is not None and hasattr(tf_hub, "HF_HUB_CACHE"):
            tf_hub.HF_HUB_CACHE = str(Path(cache_dir))
        if default_api is not None:
            default_api.endpoint = endpoint
        try:
            yield self
        finally:
            if default_api is not None:
                default_api.endpoint = old_api_endpoint
            for key, value in old_constants.items():
                setattr(constants, key, value)
            for key, value in old_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            if tf_hub is not None and old_tf_cache is not None:
                tf_hub.HF_HUB_CACHE = old_tf_cache


def _transformers_hub_module() -> Any:
    try:
        import transformers.utils.hub as tf_hub
    except ImportError:  # transformers is optional for the stand-in itself
        return None
    return tf_hub
