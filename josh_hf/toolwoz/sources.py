"""Reading MultiWOZ 2.0 (and the ToolWOZ tool files) from wherever a user has it.

Accepted sources:

* a ToolWOZ data folder laid out like ``../shared/data/multiwoz``: ``dialogues/{train,val,test}.json[.zip]``
  (dialogue ids without ``.json``), ``db/*_db.json`` and ``toolwoz/`` (tool files and id lists);
* a folder holding the official release: ``data.json`` + ``valListFile.json`` +
  ``testListFile.json`` and the ``*_db.json`` files (anywhere below it);
* the official ``MultiWOZ_2.0.zip``, as a local path or an ``http(s)://`` URL (downloaded once
  into the cache).

The tool files (``tools.json``, ``valid_api_defs.json``) are looked for in the source, then
in ``$JOSH_HF_TOOLWOZ_DIR``, then in the default data folder, then downloaded from the
ToolWOZ repository.
"""

from __future__ import annotations

import io
import json
import os
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MULTIWOZ_ENV = "JOSH_HF_MULTIWOZ"
TOOLWOZ_DIR_ENV = "JOSH_HF_TOOLWOZ_DIR"
MULTIWOZ_20_URL = "https://github.com/budzianowski/multiwoz/raw/master/data/MultiWOZ_2.0.zip"
TOOLWOZ_FILES_URL = "https://raw.githubusercontent.com/asappresearch/josh-llm-simulation-training/main/data/"
DB_DOMAINS = ("restaurant", "hotel", "attraction", "train")


class MultiWOZSourceError(ValueError):
    """The MultiWOZ source is missing or is not in any format this package reads."""


def default_multiwoz_path() -> Path:
    """``$JOSH_HF_MULTIWOZ``, else ``../shared/data/multiwoz`` beside the working copy."""
    env = os.environ.get(MULTIWOZ_ENV)
    if env:
        return Path(env).expanduser()
    candidates = [
        Path.cwd().parent / "shared" / "data" / "multiwoz",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "multiwoz",
    ]
    for c in candidates:
        if c.exists():
            return c
    return candidates[0]


def cache_dir() -> Path:
    root = os.environ.get("JOSH_HF_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "josh_hf"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _download(url: str, name: str) -> Path:
    target = cache_dir() / name
    if not target.exists():
        tmp = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                f.write(r.read())
        except OSError as e:
            raise MultiWOZSourceError(f"could not download {url}: {e}") from e
        tmp.rename(target)
    return target


@dataclass
class MultiWOZData:
    """Everything ToolWOZ is built from, already parsed."""

    dialogues: dict[str, dict[str, Any]]
    """Dialogue id (no ``.json``) → ``{"goal", "log"}``."""
    test_ids: list[str]
    val_ids: list[str]
    databases: dict[str, list[dict[str, Any]]]
    tools: list[dict[str, Any]]
    valid_api_defs: dict[str, Any]
    origin: str = ""
    notes: list[str] = field(default_factory=list)
    has_train: bool = True


def _strip_json(name: str) -> str:
    return name.removesuffix(".json")


def _read_id_list(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("["):
        ids = json.loads(text)
    else:
        ids = [line.strip() for line in text.splitlines() if line.strip()]
    return [_strip_json(i) for i in ids]


class _Files:
    """Uniform access to files in a folder or inside a zip, by base name."""

    def __init__(self, root: Path):
        self.root = root
        if root.is_file() and zipfile.is_zipfile(root):
            self._zip = zipfile.ZipFile(root)
            names = [n for n in self._zip.namelist() if not n.endswith("/") and "__MACOSX" not in n]
        elif root.is_dir():
            self._zip = None
            names = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
        else:
            raise MultiWOZSourceError(f"{root} is neither a folder nor a zip file")
        self.by_name: dict[str, str] = {}
        for n in sorted(names, key=lambda s: (s.count("/"), s)):  # shallowest wins
            self.by_name.setdefault(n.rsplit("/", 1)[-1], n)

    def has(self, name: str) -> bool:
        return name in self.by_name

    def read_bytes(self, name: str) -> bytes:
        rel = self.by_name[name]
        if self._zip is not None:
            return self._zip.read(rel)
        return (self.root / rel).read_bytes()

    def read_json(self, name: str) -> Any:
        data = self.read_bytes(name)
        if name.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                member = [n for n in inner.namelist() if n.endswith(".json")][0]
                data = inner.read(member)
        return json.loads(data)


def _tool_files(files: _Files) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if files.has("tools.json") and files.has("valid_api_defs.json"):
        return files.read_json("tools.json"), files.read_json("valid_api_defs.json")
    for folder in (os.environ.get(TOOLWOZ_DIR_ENV), default_multiwoz_path() / "toolwoz"):
        if folder and (Path(folder) / "tools.json").exists():
            p = Path(folder)
            return json.loads((p / "tools.json").read_text()), json.loads((p / "valid_api_defs.json").read_text())
    tools = json.loads(_download(TOOLWOZ_FILES_URL + "tools.json", "tools.json").read_text())
    defs = json.loads(_download(TOOLWOZ_FILES_URL + "valid_api_defs.json", "valid_api_defs.json").read_text())
    return tools, defs


def load_multiwoz(source: str | os.PathLike[str] | None = None) -> MultiWOZData:
    """Parse MultiWOZ 2.0 and the ToolWOZ tool files from ``source`` (see module docstring)."""
    if source is None:
        source = default_multiwoz_path()
    origin = str(source)
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        path = _download(source, source.rstrip("/").rsplit("/", 1)[-1])
    else:
        path = Path(source).expanduser()
    if not path.exists():
        raise MultiWOZSourceError(
            f"MultiWOZ source {path} does not exist. Pass --source (a ToolWOZ data folder, a folder "
            f"with the official data.json, or MultiWOZ_2.0.zip / its URL {MULTIWOZ_20_URL}) or set ${MULTIWOZ_ENV}."
        )
    files = _Files(path)
    notes: list[str] = []
    dialogues: dict[str, dict[str, Any]] = {}
    has_train = True
    if files.has("data.json"):
        for k, v in files.read_json("data.json").items():
            dialogues[_strip_json(k)] = v
    else:
        found = False
        for split in ("train", "val", "test"):
            for name in (f"{split}.json.zip", f"{split}.json"):
                if files.has(name):
                    found = True
                    for k, v in files.read_json(name).items():
                        dialogues[_strip_json(k)] = v
                    break
            else:
                if split == "train":
                    has_train = False
                    notes.append(
                        "The MultiWOZ train split is not in this source, so ToolWOZ has no train split; "
                        f"use the full release ({MULTIWOZ_20_URL}) to build it."
                    )
        if not found:
            raise MultiWOZSourceError(
                f"{path} holds neither data.json nor per-split dialogue files (test.json.zip, val.json.zip, ...)"
            )
    for required in ("testListFile.json", "valListFile.json"):
        if not files.has(required):
            raise MultiWOZSourceError(f"{path} has no {required} (the MultiWOZ split lists)")
    databases = {}
    for d in DB_DOMAINS:
        if not files.has(f"{d}_db.json"):
            raise MultiWOZSourceError(f"{path} has no {d}_db.json (the MultiWOZ databases)")
        databases[d] = files.read_json(f"{d}_db.json")
    tools, defs = _tool_files(files)
    return MultiWOZData(
        dialogues=dialogues,
        test_ids=_read_id_list(files.read_bytes("testListFile.json").decode()),
        val_ids=_read_id_list(files.read_bytes("valListFile.json").decode()),
        databases=databases,
        tools=tools,
        valid_api_defs=defs,
        origin=origin,
        notes=notes,
        has_train=has_train,
    )
