"""Named, cached build stages (after Model Navigator's pipeline).

A stage is a function `fn(workdir, **inputs) -> Output`, where Output is a dataclass of plain
values and Paths (a function that also takes `progress` gets the context's progress factory,
which is not part of the key). Its cache key is a content hash of every input (files and folders
by content, spec sections by their JSON) and of what produces the artifact: the stage's name and
version, the toolkit's version, the code of the stage function's module and of the modules named
in `code` (normalised: comments, docstrings and layout do not count, logic does), and the
installed versions of the distributions named in `tools`. Changing any of them reruns the stage;
since later stages take its outputs by content, they rerun when its output changes. A stage
whose key is in the cache returns its recorded output without running; `force` runs it anyway.

Each stage writes into a fresh `<cache>/<stage>/<key>.partial/` folder that is renamed into
place only when the function returned, so a killed build never leaves a half-written entry.
"""
from __future__ import annotations

import ast
import dataclasses
import fnmatch
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from pydantic import BaseModel

O = TypeVar("O")
log = logging.getLogger("builders.stages")


def hash_path(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's relative file names and bytes (sorted)."""
    h = hashlib.sha256()
    path = Path(path)
    if path.is_file():
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    elif path.is_dir():
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(str(p.relative_to(path)).encode())
            h.update(hash_path(p).encode())
    else:
        raise FileNotFoundError(f"{path} does not exist")
    return h.hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, Path):
        return {"path-sha256": hash_path(value)}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value):
        return _canonical(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


TOOLKIT_DISTRIBUTION = "triton-image-toolkit"


@functools.lru_cache(maxsize=None)
def toolkit_version() -> str:
    """The installed toolkit's version ("unknown" when it runs from a checkout that is not installed)."""
    try:
        return importlib.metadata.version(TOOLKIT_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def code_hash(source: str) -> str:
    """sha256 of Python source with comments, docstrings and layout removed: the AST, dumped.

    source: a module's text. Reformatting or rewording a comment gives the same hash; any change
    to what the code does (a constant, an operator, a call) gives another.
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def module_code_hash(module: str) -> str:
    """code_hash of an importable module's source file, by dotted name (e.g. "builders.precision").

    Read once per process: a build sees the code it imported, not later edits.
    """
    loaded = sys.modules.get(module)
    origin = getattr(loaded, "__file__", None)
    if origin is None:
        spec = importlib.util.find_spec(module)
        origin = spec.origin if spec is not None else None
    if not origin or not origin.endswith(".py"):
        raise ValueError(f"stage code module {module!r} has no Python source file to hash")
    return code_hash(Path(origin).read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=None)
def _installed() -> dict[str, str]:
    names = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            names[name.lower().replace("_", "-")] = dist.version
    return names


def tool_versions(tools: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the distributions named in `tools`.

    tools: distribution names as pip knows them ("torch", "onnxruntime"); a name may be a glob
    ("nvidia-dali-*") for packages published per CUDA release. A tool that is not installed is
    recorded as "absent", so installing it later also changes the key.
    """
    installed = _installed()
    out = {}
    for tool in tools:
        pattern = tool.lower().replace("_", "-")
        hits = sorted(n for n in installed if fnmatch.fnmatchcase(n, pattern))
        if not hits:
            out[tool] = "absent"
        for name in hits:
            out[name] = installed[name]
    return out


def made_by(code: tuple[str, ...], tools: tuple[str, ...]) -> str:
    """Short hash of the toolkit version, the code of the modules `code` and the versions of
    `tools`: names a cache that lives outside one stage's folder (e.g. calibration ranges), so
    that it is not shared across code or tool versions either."""
    blob = json.dumps({"toolkit": toolkit_version(), "code": {m: module_code_hash(m) for m in code},
                       "tools": tool_versions(tools)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class StageRecord:
    name: str
    key: str
    seconds: float
    cached: bool


@dataclass
class BuildContext:
    """What every stage run shares: where the cache lives, whether to ignore it, and the log of
    what ran (for the manifest and the summary)."""

    cache_dir: Path
    force: bool = False
    records: list[StageRecord] = field(default_factory=list)
    progress: Callable[[str], Callable[[int, int], None]] = lambda description: (lambda done, total: None)
    """description -> update(done, total); given to stage functions that take `progress`."""


class Stage(Generic[O]):
    """A named build step with typed inputs (keyword arguments) and a typed output dataclass."""

    def __init__(self, name: str, output: type[O], fn: Callable[..., O], version: str = "1",
                 code: tuple[str, ...] = (), tools: tuple[str, ...] = ()):
        """name: the cache folder's name; output: the dataclass fn returns; fn(workdir, **inputs);
        version: bump to invalidate by hand; code: dotted names of modules, besides fn's own,
        whose code makes the artifact; tools: distributions whose versions make it (see
        tool_versions)."""
        self.name, self.output, self.fn, self.version = name, output, fn, version
        self.code = (fn.__module__, *code)
        self.tools = tuple(tools)

    def provenance(self) -> dict[str, Any]:
        """What produces this stage's artifacts, besides its inputs (part of the key)."""
        return {"toolkit": toolkit_version(),
                "code": {m: module_code_hash(m) for m in self.code},
                "tools": tool_versions(self.tools)}

    def key(self, inputs: dict[str, Any]) -> str:
        blob = json.dumps({"stage": self.name, "version": self.version, "made-by": self.provenance(),
                           "inputs": _canonical(inputs)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def __call__(self, ctx: BuildContext, label: str = "", **inputs: Any) -> O:
        key = self.key(inputs)
        shown = f"{self.name}[{label}]" if label else self.name
        final = ctx.cache_dir / self.name / key
        record = final / "output.json"
        start = time.perf_counter()
        if not ctx.force and record.is_file():
            out = self._load(record, final)
            if out is not None:
                try:
                    record.touch()   # last use, for prune_cache
                except OSError:      # a read-only cache is still a cache
                    pass
                log.info("%s: cached (%s)", shown, key)
                ctx.records.append(StageRecord(shown, key, time.perf_counter() - start, True))
                return out
        log.info("%s: running -> %s", shown, final)
        partial = final.with_name(key + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        extra = {"progress": ctx.progress} if "progress" in inspect.signature(self.fn).parameters else {}
        out = self.fn(partial, **inputs, **extra)
        (partial / "output.json").write_text(json.dumps(self._dump(out, partial), indent=1))
        (partial / "provenance.json").write_text(json.dumps(self.provenance(), indent=1, sort_keys=True))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        ctx.records.append(StageRecord(shown, key, time.perf_counter() - start, False))
        log.info("%s: done in %.1fs", shown, ctx.records[-1].seconds)
        return self._load(final / "output.json", final)

    def _dump(self, out: O, workdir: Path) -> dict:
        if not isinstance(out, self.output):
            raise TypeError(f"stage {self.name} returned {type(out).__name__}, not {self.output.__name__}")
        data = {}
        for f in dataclasses.fields(out):
            v = getattr(out, f.name)
            # Paths inside the stage folder are stored relative, so the cache can move.
            if isinstance(v, Path):
                v = {"path": str(v.relative_to(workdir)) if v.is_relative_to(workdir) else str(v),
                     "inside": v.is_relative_to(workdir)}
            data[f.name] = v
        return data

    def _load(self, record: Path, workdir: Path) -> O | None:
        data = json.loads(record.read_text())
        values = {}
        for f in dataclasses.fields(self.output):
            if f.name not in data:
                return None  # recorded by an older output type: run again
            v = data[f.name]
            if isinstance(v, dict) and set(v) == {"path", "inside"}:
                v = (workdir / v["path"]) if v["inside"] else Path(v["path"])
                if not v.exists():
                    return None
            values[f.name] = v
        return self.output(**values)


def prune_cache(cache_dir: Path, unused_for_s: float) -> list[Path]:
    """Remove the stage entries of the cache at `cache_dir` not used (made or read) for
    `unused_for_s` seconds, and partial ones as old; returns what was removed. An entry's last use
    is its output.json's modification time, which a cache hit renews."""
    removed = []
    cutoff = time.time() - unused_for_s
    for entry in sorted(Path(cache_dir).glob("*/*")):
        mark = entry / "output.json"
        # Only stage entries: other folders of the cache (calibration/, the int8 calibration
        # caches, read without a write) have no mark of their last use and are left alone.
        if entry.is_dir() and mark.is_file():
            used = mark.stat().st_mtime
        elif entry.is_dir() and entry.name.endswith(".partial"):
            used = entry.stat().st_mtime
        else:
            continue
        if used < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
