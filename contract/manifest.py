"""manifest.json: what a build wrote, written and read in one place.

The manifest lies at the top of the output folder, beside the targets (`<output>/manifest.json`,
`<output>/cpu/`, `<output>/gpu/`). It is portable: every path it records is relative to its own
folder, so a repository that is moved, renamed, or built in a container and read on the host
still names its checkpoint and validation images. Files the build read from elsewhere (the
stage cache, a user's ONNX or checkpoint) are recorded by file name only, as provenance.

Format versions (`format_version`):
    1  (no field) builders before the portable manifest: absolute paths, not read any more.
    2  every path relative to the manifest's folder; the validation images clients use by
       default are bundled in the repository (`data/<model>/val/`).

Readers call :func:`load_manifest`, which checks the version and every recorded path and
returns a :class:`Manifest` whose paths are resolved against the folder it was loaded from.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from contract.errors import USAGE, ToolkitError
from contract.layout import MANIFEST_FILE

FORMAT_VERSION = 2
BUILD_COMMAND = "python builders/build_all.py"
# A path after an option's "=" (trtexec's --saveEngine=/cache/...), or a whole absolute path.
_OPTION_PATH = re.compile(r"^(--?[\w-]+=)(/.*)$")


class ManifestError(ToolkitError, ValueError):
    """The manifest is missing, unreadable, of another format, or names a file that is not there."""

    exit_code = USAGE


def _is_absolute(value: str) -> bool:
    return value.startswith("/") or bool(re.match(r"^[A-Za-z]:[\\/]", value)) or bool(_OPTION_PATH.match(value))


def file_names_only(value: Any) -> Any:
    """`value` with every absolute path string reduced to its file name (recursively through dicts
    and lists): for provenance that lies outside the repository, such as stage-cache files."""
    if isinstance(value, dict):
        return {k: file_names_only(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [file_names_only(v) for v in value]
    if isinstance(value, Path):
        return value.name
    if isinstance(value, str):
        m = _OPTION_PATH.match(value)
        if m:
            return m.group(1) + os.path.basename(m.group(2))
        if _is_absolute(value):
            return os.path.basename(value.rstrip("/\\"))
    return value


def absolute_paths(value: Any, where: str = "") -> list[str]:
    """JSON locations (`models.digits.data.val`) of every string in `value` that is an absolute path."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in absolute_paths(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in absolute_paths(v, f"{where}[{i}]")]
    return [where] if isinstance(value, str) and _is_absolute(value) else []


def relative(path: str | Path | None, folder: Path) -> str | None:
    """`path` (inside `folder`) as the manifest records it: relative, with forward slashes."""
    if path is None:
        return None
    return Path(path).resolve().relative_to(folder.resolve()).as_posix()


@dataclass(frozen=True)
class Measured:
    """One precision's model measured on the validation images (ONNX Runtime): whether it runs
    here (`reason` when not), top-1 accuracy, agreement with fp32 and max |logit difference|."""

    precision: str
    runnable: bool
    reason: str = ""
    accuracy: float | None = None
    top1_agreement_fp32: float | None = None
    max_abs_diff_fp32: float | None = None


@dataclass(frozen=True)
class PrecisionResult(Measured):
    """What the manifest records for one precision: the measurement, the build's seconds and notes;
    `targets`: the same for the model each target uses (int8 differs: U8S8 on cpu, S8S8 Q/DQ as
    the plans' source on gpu)."""

    build_seconds: float | None = None
    notes: str = ""
    targets: dict[str, "PrecisionResult"] = field(default_factory=dict)

    @classmethod
    def from_record(cls, precision: str, rec: dict) -> "PrecisionResult":
        return cls(precision, bool(rec.get("runnable", False)), rec.get("reason") or "", rec.get("accuracy"),
                   rec.get("top1_agreement_fp32"), rec.get("max_abs_diff_fp32"), rec.get("build_seconds"),
                   rec.get("notes") or "",
                   {t: cls.from_record(precision, r) for t, r in (rec.get("targets") or {}).items()})

    def on(self, target: str) -> "PrecisionResult":
        """The result for the model `target` uses (this one when the manifest has none per target)."""
        return self.targets.get(target, self)


@dataclass(frozen=True)
class Artifact:
    """One file the build put into the repository (`path`, relative to the manifest's folder)."""

    path: str
    target: str
    model: str
    kind: str                           # onnx, tensorrt_plan, torchscript, dali_definition
    precision: str | None = None
    backend: str | None = None          # layout.TORCH_BACKEND for the PyTorch twin, else None
    compute_capability: str | None = None
    onnx_sha256: str | None = None
    missing: str | None = None          # why the file is not there yet (a plan that needs a GPU build)
    bytes: int | None = None
    record: dict = field(default_factory=dict)   # the JSON entry as written

    @classmethod
    def from_record(cls, path: str, rec: dict) -> "Artifact":
        return cls(path, rec.get("target", ""), rec.get("model", ""), rec.get("kind", ""), rec.get("precision"),
                   rec.get("backend"), rec.get("compute_capability"), rec.get("onnx_sha256"), rec.get("missing"),
                   rec.get("bytes"), rec)


@dataclass(frozen=True)
class ModelEntry:
    """One model of the manifest; `checkpoint` and `val` are resolved against the manifest's folder."""

    name: str
    record: dict                 # the JSON entry as written (paths relative)
    checkpoint: Path | None      # the PyTorch weights the repository was built from (source/<name>.pt)
    val: Path | None             # the bundled labeled validation images (ImageFolder), if any
    source_root: Path | None = None   # a module source's copied code (source/<name>_code), if any

    @property
    def labels(self) -> list[str]:
        return list(self.record.get("labels", []))

    @property
    def checkpoint_name(self) -> str | None:
        """The checkpoint as the manifest records it (relative to its folder: source/<name>.pt)."""
        return self.record.get("checkpoint")

    @property
    def num_classes(self) -> int:
        return int(self.record.get("num_classes", len(self.labels)))

    @property
    def input(self) -> dict:
        return dict(self.record.get("input") or {})

    def input_spec(self):
        """The preprocessing the model was built with, as a contract.spec.Input."""
        from contract.spec import Input

        return Input(**self.input)

    def _section(self, key: str) -> dict:
        """A copy of one section of the model's record ({} where the build wrote none)."""
        return dict(self.record.get(key) or {})

    @property
    def source(self) -> dict:
        """The spec's source section as built (kind, arch; outside files by name only)."""
        return self._section("source")

    @property
    def arch(self) -> str | None:
        return self.source.get("arch")

    @property
    def precisions(self) -> dict[str, PrecisionResult]:
        """precision -> what the build measured for it (ONNX Runtime variants)."""
        return {p: PrecisionResult.from_record(p, r) for p, r in (self.record.get("precisions") or {}).items()}

    @property
    def torchscript(self) -> dict:
        """The PyTorch-backend twin: {"status": ..., "precisions": {precision: parity record}}."""
        return self._section("torchscript")

    def built_precisions(self, backend: str | None = None) -> list[str]:
        """The precisions built for `backend` (layout.TORCH_BACKEND: the TorchScript twin's)."""
        from contract import layout

        if layout.backend_name(backend) == layout.TORCH_BACKEND:
            return list(self.torchscript.get("precisions") or {})
        return list(self.record.get("precisions") or {})

    @property
    def tensorrt(self) -> dict:
        """The gpu target's plans: {"status": ..., and when built tensorrt_version, gpu, plans}."""
        return self._section("tensorrt")

    @property
    def preprocessing(self) -> dict:
        """DALI CPU vs the torchvision transform (contract.preprocess.Parity.summary() and policy)."""
        return self._section("preprocessing")

    @property
    def export(self) -> dict | None:
        """PyTorch vs the exported ONNX (max_abs_diff, top1_agreement, pytorch_accuracy), if a checkpoint."""
        return self.record.get("export")


@dataclass(frozen=True)
class Manifest:
    """A loaded manifest. `record` is the JSON as written; `folder` the folder it was read from."""

    folder: Path
    record: dict
    models: dict[str, ModelEntry] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_FILE

    @property
    def format_version(self) -> int:
        return int(self.record["format_version"])

    @property
    def created(self) -> str | None:
        return self.record.get("created")

    @property
    def tools(self) -> dict[str, str | None]:
        """Distribution -> version the artifacts were built with (None: not installed)."""
        return dict(self.record.get("tools") or {})

    @property
    def targets(self) -> list[str]:
        return list(self.record.get("targets") or [])

    @property
    def artifacts(self) -> dict[str, Artifact]:
        """Repository path (relative to `folder`) -> the artifact written there."""
        return {p: Artifact.from_record(p, r) for p, r in (self.record.get("artifacts") or {}).items()}

    def model(self, name: str) -> ModelEntry:
        if name not in self.models:
            raise ManifestError(f"{name!r} is not in {self.path}; it has {sorted(self.models)}")
        return self.models[name]

    @property
    def live_configs(self) -> dict[str, "LiveConfig"]:
        """target -> the serving configs config search made live there (none: the builder's own)."""
        return {t: LiveConfig(**{**v, "models": tuple(v["models"])})
                for t, v in (self.record.get(LIVE_CONFIGS) or {}).items()}

    def dali_definition(self, name: str, target: str = "cpu") -> Path:
        """The pipeline definition (dali.py) of `name`'s preprocessing model in `target`."""
        from contract import layout

        return self.folder / target / layout.preprocess_model(name) / "1" / layout.DALI_DEFINITION


LIVE_CONFIGS = "live_configs"


@dataclass(frozen=True)
class LiveConfig:
    """Which serving configs of one target are live, as config search wrote them back
    (benchmarks.config_search, docs/config_search.md). Paths are relative to the manifest's folder.

    target: cpu or gpu; ensemble: the ensemble searched; models: the models whose config.pbtxt
    (and dali.py) it rewrote; live: folder with copies of the configs now in the target;
    previous: folder with the configs they replaced; written: UTC time, ISO 8601."""

    target: str
    ensemble: str
    models: tuple[str, ...]
    live: str
    previous: str
    written: str


def record_live_config(folder: str | Path, live: LiveConfig) -> Path:
    """Record `live` in `<folder>/manifest.json` (replacing the target's earlier record); the
    manifest must load (load_manifest) and both recorded folders must exist under `folder`."""
    manifest = load_manifest(folder)
    for where in (live.live, live.previous):
        _resolve(manifest.folder, where, f"{LIVE_CONFIGS}.{live.target}", manifest.path)
    record = dict(manifest.record)
    record[LIVE_CONFIGS] = {**(record.get(LIVE_CONFIGS) or {}),
                            live.target: {**live.__dict__, "models": list(live.models)}}
    return write_manifest(manifest.folder, record)


def _resolve(folder: Path, value: str | None, where: str, source: Path) -> Path | None:
    """A recorded relative path as a path under `folder`; refuses absolute paths, paths that leave
    the folder, and files that are not there."""
    if value is None:
        return None
    if not isinstance(value, str) or _is_absolute(value) or ".." in PurePosixPath(value).parts:
        raise ManifestError(f"{source}: {where} = {value!r} is not a path relative to the manifest's folder")
    path = folder / value
    if not path.exists():
        raise ManifestError(f"{source}: {where} names {value!r}, but {path} does not exist (was the "
                            f"repository copied without it? rebuild with `{BUILD_COMMAND}`)")
    return path


def manifest_file(path_or_folder: str | Path) -> Path:
    """The manifest.json meant by a manifest path or by the folder that holds it."""
    p = Path(path_or_folder)
    return p / MANIFEST_FILE if p.is_dir() else p


def load_manifest(path_or_folder: str | Path) -> Manifest:
    """Read and check a manifest.

    path_or_folder: the manifest.json file, or the folder that holds it (the repository's top
    folder). Relative paths in it are resolved against that folder. Raises ManifestError when
    the file is missing or not JSON, when it was written in another format (the pre-portable
    manifests with absolute paths included), or when a path it records is absolute, leaves the
    folder, or names a file that is not there."""
    path = manifest_file(path_or_folder).resolve()
    if not path.is_file():
        raise ManifestError(f"manifest {path} not found; build the repository (`{BUILD_COMMAND}`) or name "
                            f"another one")
    try:
        record = json.loads(path.read_text())
    except ValueError as err:
        raise ManifestError(f"{path} is not JSON: {err}") from err
    if not isinstance(record, dict) or not isinstance(record.get("models"), dict):
        raise ManifestError(f"{path} is not a builder manifest (no `models` table)")
    version = record.get("format_version")
    if version is None:
        raise ManifestError(f"{path} has no format_version: it was written by an older builder, with absolute "
                            f"paths that do not survive a move; rebuild it with `{BUILD_COMMAND}` (the stage "
                            "cache makes that quick)")
    if version != FORMAT_VERSION:
        raise ManifestError(f"{path} has format_version {version!r}; this toolkit reads {FORMAT_VERSION}")
    stray = absolute_paths(record)
    if stray:
        raise ManifestError(f"{path} records absolute paths ({', '.join(stray[:5])}); every path must be "
                            "relative to the manifest's folder")
    folder = path.parent
    models = {}
    for name, entry in record["models"].items():
        models[name] = ModelEntry(
            name, entry,
            _resolve(folder, entry.get("checkpoint"), f"models.{name}.checkpoint", path),
            _resolve(folder, (entry.get("data") or {}).get("val"), f"models.{name}.data.val", path),
            _resolve(folder, entry.get("source_root"), f"models.{name}.source_root", path))
    return Manifest(folder, record, models)


def write_manifest(folder: Path, record: dict) -> Path:
    """Write `record` as `<folder>/manifest.json`, stamped with FORMAT_VERSION.

    Refuses (ManifestError) a record with an absolute path anywhere, and one whose checkpoint or
    data.val does not lie inside `folder`; written to a private temporary file and renamed, so a
    reader never sees half a manifest."""
    record = {"format_version": FORMAT_VERSION, **{k: v for k, v in record.items() if k != "format_version"}}
    stray = absolute_paths(record)
    if stray:
        raise ManifestError(f"the manifest would record absolute paths ({', '.join(stray[:5])}); record them "
                            "relative to the output folder, or by file name (file_names_only)")
    target = Path(folder) / MANIFEST_FILE
    for name, entry in record.get("models", {}).items():
        _resolve(Path(folder), entry.get("checkpoint"), f"models.{name}.checkpoint", target)
        _resolve(Path(folder), (entry.get("data") or {}).get("val"), f"models.{name}.data.val", target)
    tmp = target.with_name(f".{MANIFEST_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record, indent=2))
    os.replace(tmp, target)
    return target
