"""The release matrix: which Triton release the gpu target is built and served with.

A TensorRT plan loads only in the TensorRT it was built with, and the DALI backend reads only
pipelines its own DALI understands, so the builder (TensorRT image) and the server (tritonserver
image) must come from ONE monthly release. This table is the single place that says what each
supported release contains; docs/gpu.md prints the same table, docker-compose.yml takes its
default tag from :data:`DEFAULT_RELEASE` (tests/test_compose.py checks that they agree), and the
builder refuses a plan build whose TensorRT major.minor is not the release's
(:func:`check_tensorrt`).

Where each number comes from (read 2026-08, see ``source`` per release):

- DALI: the ``DALI_VERSION`` file of triton-inference-server/dali_backend's ``r<release>``
  branch, which the Triton build installs into the DALI backend.
- CUDA and driver: the Triton release notes ("Release YY.MM is based on CUDA ...") and CUDA's
  minor-version compatibility rule (every CUDA 13.x needs an R580 or newer driver; some Triton
  notes still print "575", which CUDA 13 does not accept without the forward-compatibility
  package).
- TensorRT: NVIDIA's container release notes where found (CUDA DL / PyTorch 26.03 and 26.05);
  otherwise the TensorRT that users report inside ``nvcr.io/nvidia/tensorrt:<release>-py3``.
  The builder prints the TensorRT it found, so a wrong row fails loudly and early, never
  silently (a plan of another TensorRT would not load in Triton).
- Python: all these images are Ubuntu 24.04 with its Python 3.12.

Releases before 26.02 ship DALI 1.51.2 in the DALI backend, which cannot be installed from PyPI
(real wheels start at 1.53.0), so their preprocessing cannot be tested off a GPU host: they are
not in the matrix. Releases after 26.06 exist, but their DALI version was not documented in the
sources read, so they are not either.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from contract.errors import USAGE, ToolkitError


class UnknownRelease(ToolkitError, ValueError):
    """A release name that is not in :data:`RELEASES`; the message lists the known ones."""

    exit_code = USAGE


class TensorRTMismatch(ToolkitError, RuntimeError):
    """The TensorRT installed here is not the one the chosen release serves plans with."""


@dataclass(frozen=True)
class Release:
    """One monthly NVIDIA release (the same tag for the TensorRT and tritonserver images)."""

    name: str
    """The NGC tag prefix, "YY.MM"."""
    tensorrt: str
    """TensorRT version in both images, full ("10.16.0.72"); plans must match major.minor."""
    dali_version: str
    """DALI inside the Triton DALI backend (dali_backend's DALI_VERSION on branch r<name>)."""
    cuda: str
    """CUDA toolkit the images are based on."""
    min_driver: str
    """Lowest NVIDIA driver branch that runs the images without the forward-compatibility package."""
    python: str
    """Python in both images (what the builder image installs packages for)."""
    source: str
    """Where the TensorRT and CUDA numbers were read (DALI always comes from dali_backend)."""

    @property
    def tensorrt_image(self) -> str:
        """The builder's base image."""
        return f"nvcr.io/nvidia/tensorrt:{self.name}-py3"

    @property
    def triton_image(self) -> str:
        """The server image."""
        return f"nvcr.io/nvidia/tritonserver:{self.name}-py3"

    @property
    def tensorrt_major_minor(self) -> tuple[int, int]:
        return _major_minor(self.tensorrt)

    @property
    def tensorrt_major(self) -> int:
        return self.tensorrt_major_minor[0]


def _major_minor(version: str) -> tuple[int, int]:
    parts = str(version).split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise ValueError(f"TensorRT version {version!r} is not of the form MAJOR.MINOR[...]") from None


_R = Release
RELEASES: Mapping[str, Release] = MappingProxyType({r.name: r for r in (
    _R("26.02", tensorrt="10.15.1.29", dali_version="1.53.0", cuda="13.1.1", min_driver="580",
       python="3.12",
       source="Triton 26.02 release notes (CUDA 13.1.1); TensorRT as reported inside tensorrt:26.02-py3"),
    _R("26.03", tensorrt="10.16.0.72", dali_version="2.0.0", cuda="13.2.0", min_driver="580",
       python="3.12", source="NVIDIA CUDA DL 26.03 release notes (CUDA 13.2.0, TensorRT 10.16.0.72)"),
    _R("26.04", tensorrt="10.16.1", dali_version="2.0.0", cuda="13.2.1", min_driver="580",
       python="3.12",
       source="Triton 26.04 release notes (CUDA 13.2.1); TensorRT as reported inside tensorrt:26.04-py3"),
    _R("26.05", tensorrt="10.16.1.11", dali_version="2.1.0", cuda="13.2.1", min_driver="580",
       python="3.12", source="NVIDIA PyTorch 26.05 release notes (CUDA 13.2.1, TensorRT 10.16.1.11)"),
    _R("26.06", tensorrt="11.0.0.114", dali_version="2.1.1", cuda="13.3.0", min_driver="580",
       python="3.12",
       source="Triton 26.06 release notes (CUDA 13.3.0); TensorRT as reported inside tensorrt:26.06-py3"),
)})

DEFAULT_RELEASE = "26.06"
"""The newest release whose DALI is documented and installable from PyPI (>= 1.53.0)."""


def release(name: str | None = None) -> Release:
    """The matrix row for `name` ("YY.MM"); None gives :data:`DEFAULT_RELEASE`.

    Raises UnknownRelease, naming the supported releases, for anything else.
    """
    key = DEFAULT_RELEASE if name is None else str(name).strip()
    try:
        return RELEASES[key]
    except KeyError:
        raise UnknownRelease(f"Triton release {name!r} is not in the release matrix "
                             f"(contract/releases.py); supported: {', '.join(RELEASES)}") from None


def check_tensorrt(installed: str, target: Release) -> None:
    """Raise TensorRTMismatch unless `installed` has the release's TensorRT major.minor.

    Triton loads a plan only in the TensorRT it was built with (version-compatible plans:
    only in the same or a newer minor of the same major), so a plan built by another
    TensorRT would fail at server start; failing here says why, before anything is built.
    """
    if _major_minor(installed) != target.tensorrt_major_minor:
        want = ".".join(map(str, target.tensorrt_major_minor))
        raise TensorRTMismatch(
            f"TensorRT {installed} is installed, but Triton release {target.name} serves plans with "
            f"TensorRT {target.tensorrt} (needs {want}.x). Build in {target.tensorrt_image} "
            f"(`docker compose up` does), or choose the release whose TensorRT this is "
            f"(TRITON_RELEASE=YY.MM; supported: {', '.join(RELEASES)})")


def matrix_markdown() -> str:
    """The release matrix as the Markdown table docs/gpu.md carries (tests compare the two)."""
    head = ("| Triton release | TensorRT | DALI (backend) | CUDA | min. driver | Python | images |\n"
            "|---|---|---|---|---|---|---|")
    rows = [f"| {r.name}{' (default)' if r.name == DEFAULT_RELEASE else ''} | {r.tensorrt} | "
            f"{r.dali_version} | {r.cuda} | R{r.min_driver} | {r.python} | "
            f"`{r.tensorrt_image}`, `{r.triton_image}` |" for r in RELEASES.values()]
    return "\n".join([head, *rows])
