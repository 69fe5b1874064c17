"""What a load test sends: command-line options (each also an environment variable) and the
scenario built from them once per Locust process.

Locust parses the options after it has imported the locustfile, so nothing here runs at import;
`add_arguments` is registered on `init_command_line_parser` and `Scenario.from_options` is called
from the `init` event, when the parsed options exist.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contract import layout
from contract.images import IMAGE_SUFFIXES, pack_batch
from contract.manifest import load_manifest, manifest_file

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHAPES = ("constant", "step", "spike")
PROTOCOL_CHOICES = ("both", "grpc", "http")


def add_arguments(parser) -> None:
    """Locust custom arguments. Every one has an environment variable, so a CI job or a
    docker/k8s deployment can set a scenario without editing the command line."""
    g = parser.add_argument_group("Triton scenario (load_tests/locustfile.py)")
    g.add_argument("--http-url", env_var="TRITON_HTTP_URL", default="127.0.0.1:8000",
                   help="Triton HTTP address host:port (default: %(default)s)")
    g.add_argument("--grpc-url", env_var="TRITON_GRPC_URL", default="127.0.0.1:8001",
                   help="Triton gRPC address host:port (default: %(default)s)")
    g.add_argument("--protocol", env_var="TRITON_PROTOCOL", choices=PROTOCOL_CHOICES, default="both",
                   help="which users run: gRPC, HTTP or both, split evenly (default: %(default)s; naming user "
                        "classes on the command line, e.g. TritonGrpcUser, works too)")
    g.add_argument("--manifest", env_var="TRITON_MANIFEST", default="model_repository/manifest.json",
                   help="manifest.json of the served repository: default model and image set (default: %(default)s)")
    g.add_argument("--model", env_var="TRITON_MODEL", default="",
                   help="model name (digits) or ensemble (digits_int8); default: the manifest's only model")
    g.add_argument("--precision", env_var="TRITON_PRECISION", default="fp32",
                   help="precision(s), comma-separated (fp32,int8): users are spread over every precision x "
                        "batch size combination (default: %(default)s)")
    g.add_argument("--backend", env_var="TRITON_BACKEND", default=layout.DEFAULT_BACKEND,
                   help="network backend: tensorrt/onnxruntime (ensembles <model>_<precision>) or torch (the "
                        "PyTorch-backend twin <model>_<precision>_torch) (default: %(default)s)")
    g.add_argument("--batch-size", env_var="TRITON_BATCH_SIZE", default="1",
                   help="images per request, comma-separated for a mix (1,8); one request is one batch "
                        "(default: %(default)s)")
    g.add_argument("--images", env_var="TRITON_IMAGES", default="",
                   help="folder of images to send (ImageFolder or flat, searched recursively); default: the "
                        "validation images the manifest bundles (data.val)")
    g.add_argument("--max-images", env_var="TRITON_MAX_IMAGES", type=int, default=1024,
                   help="use at most this many images of the set (default: %(default)s)")
    g.add_argument("--think-time", env_var="TRITON_THINK_TIME", default="0",
                   help="seconds a user waits between requests: a number, or MIN-MAX for a uniform random wait "
                        "(default: %(default)s, closed loop)")
    g.add_argument("--request-timeout", env_var="TRITON_REQUEST_TIMEOUT", type=float, default=30.0,
                   help="seconds before a request counts as failed (default: %(default)s)")
    g.add_argument("--request-log", env_var="TRITON_REQUEST_LOG", default="",
                   help="append one CSV line per request (start,end epoch seconds, protocol, user, name, ok) to "
                        "this file; each process adds .<pid> in distributed runs (default: off)")
    g.add_argument("--load-shape", env_var="TRITON_LOAD_SHAPE", choices=SHAPES, default="constant",
                   help="constant: -u users for -t; step: add --step-users every --step-time s up to -u; spike: "
                        "--spike-base users, -u users from --spike-at for --spike-duration s (default: %(default)s)")
    g.add_argument("--step-users", env_var="TRITON_STEP_USERS", type=int, default=1,
                   help="step shape: users added per step (default: %(default)s)")
    g.add_argument("--step-time", env_var="TRITON_STEP_TIME", type=float, default=10.0,
                   help="step shape: seconds per step (default: %(default)s)")
    g.add_argument("--spike-base", env_var="TRITON_SPIKE_BASE", type=int, default=0,
                   help="spike shape: users outside the spike (default: a quarter of -u, at least 1)")
    g.add_argument("--spike-at", env_var="TRITON_SPIKE_AT", type=float, default=5.0,
                   help="spike shape: seconds until the spike (default: %(default)s)")
    g.add_argument("--spike-duration", env_var="TRITON_SPIKE_DURATION", type=float, default=5.0,
                   help="spike shape: seconds the spike lasts (default: %(default)s)")
    g.add_argument("--sla-p95-ms", env_var="TRITON_SLA_P95_MS", type=float, default=0.0,
                   help="SLA: p95 response time at most this many ms (default: 0 = not checked)")
    g.add_argument("--sla-max-failure-ratio", env_var="TRITON_SLA_MAX_FAILURE_RATIO", type=float, default=0.0,
                   help="SLA: failed requests / all requests at most this (default: %(default)s, i.e. any "
                        "failure fails the run, as Locust itself does; 1 = not checked)")
    g.add_argument("--sla-min-rps", env_var="TRITON_SLA_MIN_RPS", type=float, default=0.0,
                   help="SLA: successful requests per second at least this (default: 0 = not checked)")


def csv_list(text: str, cast=str) -> list:
    return [cast(x.strip()) for x in str(text).split(",") if x.strip()]


def parse_think_time(text: str) -> tuple[float, float]:
    text = str(text).strip() or "0"
    lo, _, hi = text.partition("-")
    a, b = float(lo), float(hi) if hi else float(lo)
    if a < 0 or b < a:
        raise ValueError(f"--think-time must be a number >= 0 or MIN-MAX with MIN <= MAX; got {text!r}")
    return a, b


def resolve_path(text: str) -> Path:
    """As given (relative to the working directory), else relative to the project root, so the
    defaults work whether locust starts in the checkout or elsewhere."""
    p = Path(text).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p


def image_files(folder: Path, limit: int) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist (--images / TRITON_IMAGES)")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"image folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files[:limit] if limit > 0 else files


@dataclass(frozen=True)
class Batch:
    """One request's payload: `n` padded images, and which files they are (for error messages)."""

    array: np.ndarray            # uint8 [n, bytes]
    files: tuple[str, ...]


@dataclass
class Scenario:
    name: str                                   # base model name, e.g. digits
    ensembles: dict[str, str]                   # precision -> ensemble name
    batch_sizes: list[int]
    images_root: Path
    files: list[Path]
    think: tuple[float, float]
    timeout_s: float
    urls: dict[str, str]
    pools: dict[int, list[Batch]] = field(default_factory=dict)
    num_classes: dict[str, int] = field(default_factory=dict)       # ensemble -> classes (from the server)

    @property
    def combos(self) -> list[tuple[str, int]]:
        """(ensemble, batch size) pairs; user k of a process runs combos[k % len]."""
        return [(ens, bs) for ens in self.ensembles.values() for bs in self.batch_sizes]

    def think_s(self) -> float:
        lo, hi = self.think
        return lo if hi == lo else random.uniform(lo, hi)

    @classmethod
    def from_options(cls, opts) -> "Scenario":
        from clients.connection import normalize_url

        manifest_path = manifest_file(resolve_path(opts.manifest))
        # Optional: --images and --model can stand in for it. load_manifest's errors are ValueErrors.
        loaded = load_manifest(manifest_path) if manifest_path.is_file() else None
        models = loaded.models if loaded else {}
        model = opts.model.strip()
        precisions = csv_list(opts.precision)
        if not precisions:
            raise ValueError("--precision is empty")
        backend = layout.backend_name(opts.backend)
        # A full ensemble name (digits_int8, digits_fp16_torch) fixes the precision and backend;
        # strip it to find the base model.
        suffixes = [(layout.ensemble_model("", p, b), p, b) for p in layout.PRECISIONS
                    for b in (layout.DEFAULT_BACKEND, layout.TORCH_BACKEND)]
        for full, p, b in suffixes:
            if model.endswith(full):
                model, precisions, backend = model[: -len(full)], [p], b
                break
        if not model:
            if len(models) != 1:
                raise ValueError(f"--model is needed: the manifest {manifest_path} lists "
                                 f"{len(models)} models ({', '.join(sorted(models)) or 'none; is it there?'})")
            model = next(iter(models))
        batch_sizes = csv_list(opts.batch_size, int)
        if not batch_sizes or min(batch_sizes) < 1:
            raise ValueError(f"--batch-size must be one or more integers >= 1; got {opts.batch_size!r}")
        if opts.images:
            root = resolve_path(opts.images)
        else:
            val = models[model].val if model in models else None
            if not val:
                raise ValueError(f"no image set: pass --images <folder> (the manifest {manifest_path} "
                                 f"{'bundles no validation images for ' + model if loaded else 'was not found'})")
            root = val
        files = image_files(root, opts.max_images)
        sc = cls(name=model, ensembles={p: layout.ensemble_model(model, p, backend) for p in precisions},
                 batch_sizes=sorted(set(batch_sizes)), images_root=root, files=files,
                 think=parse_think_time(opts.think_time), timeout_s=float(opts.request_timeout),
                 urls={"http": normalize_url(opts.http_url, "http"), "grpc": normalize_url(opts.grpc_url, "grpc")})
        sc._build_pools()
        return sc

    def _build_pools(self) -> None:
        # Requests carry `bs` different images, cycling through the set, as benchmarks.bench does, so the
        # two measure the same work. Padded once here: the users only send.
        encoded = [f.read_bytes() for f in self.files]
        names = [str(f.relative_to(self.images_root)) for f in self.files]
        n = len(encoded)
        for bs in self.batch_sizes:
            pool = []
            for i in range(0, max(n, bs), bs):
                idx = [(i + j) % n for j in range(bs)]
                pool.append(Batch(pack_batch([encoded[k] for k in idx]), tuple(names[k] for k in idx)))
            self.pools[bs] = pool

    def describe(self) -> str:
        return (f"model {self.name}, ensembles {', '.join(self.ensembles.values())}, batch sizes "
                f"{self.batch_sizes}, {len(self.files)} images from {self.images_root}, think time "
                f"{self.think[0]:g}-{self.think[1]:g} s, HTTP {self.urls['http']}, gRPC {self.urls['grpc']}")
