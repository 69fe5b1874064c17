"""The DALI stand-in under bad and hostile input: 4xx-class errors naming the image, a pixel budget
checked from the headers before anything is decoded, and a pipeline kept in memory.

The server serves a private copy of the cpu repository whose DALI config has a small per-request
budget (so the per-request limit can be hit with real images), and whose files are deleted while
it runs.
"""
from __future__ import annotations

import io
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from builders import triton_config
from contract import layout
from contract.images import pack_batch
from serving.local_server import LocalTritonServer, free_port

pytestmark = pytest.mark.server

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

REQUEST_PIXELS = 3 * 48 * 48   # the copy's max_request_pixels: three 48x48 demo images
# The copy's max_image_pixels: two 48x48 images' worth, so that each limit can be hit alone (an
# image above this but under REQUEST_PIXELS; a request above REQUEST_PIXELS of images under this).
IMAGE_PIXELS = 2 * 48 * 48


def photo_jpeg(width: int, height: int) -> bytes:
    """A real JPEG of width x height (a gradient), as a client would send it."""
    xs = np.linspace(0, 255, width, dtype=np.uint8)
    img = np.stack([np.tile(xs, (height, 1)), np.tile(xs[::-1], (height, 1)), np.full((height, width), 90, np.uint8)], -1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def bomb_jpeg(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 16x16 baseline JPEG whose frame header (SOF0) claims width x height: a few hundred
    bytes that make a decoder allocate width * height * 3 bytes."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="JPEG", quality=50)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture(scope="module")
def copy_repo(repo_root, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("limits") / "cpu"
    shutil.copytree(repo_root / "cpu", repo)
    pre = repo / layout.preprocess_model("digits") / "config.pbtxt"
    cfg = triton_config.read_config(pre)
    cfg.parameters["max_request_pixels"].string_value = str(REQUEST_PIXELS)
    cfg.parameters["max_image_pixels"].string_value = str(IMAGE_PIXELS)
    triton_config.write_config(cfg, pre.parent)
    return repo


@pytest.fixture(scope="module")
def server(copy_repo):
    srv = LocalTritonServer(copy_repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                            timeout_s=180)
    with srv:
        yield srv


def _infer(server, protocol: str, model: str, batch: np.ndarray) -> np.ndarray:
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    try:
        inp = mod.InferInput(layout.ENSEMBLE_INPUT, list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        return client.infer(model, [inp]).as_numpy(layout.ENSEMBLE_OUTPUT)
    finally:
        client.close()


def _client_error(protocol: str, err: InferenceServerException) -> bool:
    status = str(err.status())
    return status == "400" if protocol == "http" else "INVALID_ARGUMENT" in status


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", ["truncated", "not_an_image", "bomb", "request_budget"])
def test_bad_input_is_a_client_error_naming_image_and_reason(server, val_images, protocol, case):
    good = val_images[0][0]
    images, words = {
        "truncated": ([good, good[: len(good) // 2]], ["image 1 of 2", "could not be decoded"]),
        "not_an_image": ([b"hello world" * 10], ["image 0 of 1", "not an encoded image"]),
        "bomb": ([good, bomb_jpeg()], ["image 1 of 2", "20000x20000", "max_image_pixels"]),
        "request_budget": ([good] * 4, ["4 images", "max_request_pixels"]),
    }[case]
    with pytest.raises(InferenceServerException) as err:
        _infer(server, protocol, layout.ensemble_model("digits", "fp32"), pack_batch(images))
    assert _client_error(protocol, err.value), f"{case}: status {err.value.status()}: {err.value}"
    for w in words:
        assert w in str(err.value), f"{case}: {w!r} missing from: {err.value}"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_each_pixel_limit_holds_alone(server, val_images, protocol):
    """max_image_pixels < max_request_pixels here: an image above the per-image limit but under the
    per-request one is refused for its own size; a request at the per-request limit, above the
    per-image one in total, is served; one pixel row more than the request limit is refused."""
    model = layout.ensemble_model("digits", "fp32")
    good = val_images[0][0]
    big = photo_jpeg(72, 72)          # 5184 pixels: above IMAGE_PIXELS, under REQUEST_PIXELS
    assert IMAGE_PIXELS < 72 * 72 < REQUEST_PIXELS
    with pytest.raises(InferenceServerException) as err:
        _infer(server, protocol, model, pack_batch([big]))
    assert _client_error(protocol, err.value), str(err.value)
    for w in ["image 0 of 1", "72x72", f"{IMAGE_PIXELS:,} pixels per image", "max_image_pixels"]:
        assert w in str(err.value), f"{w!r} missing from: {err.value}"
    # three 48x48 images: exactly REQUEST_PIXELS, each under IMAGE_PIXELS, together above it
    logits = _infer(server, protocol, model, pack_batch([good] * 3))
    assert logits.shape[0] == 3 and np.isfinite(logits).all()
    # a 48x49 image makes the request 48 pixels too many; every image is still under IMAGE_PIXELS
    with pytest.raises(InferenceServerException) as err:
        _infer(server, protocol, model, pack_batch([good, good, photo_jpeg(48, 49)]))
    assert _client_error(protocol, err.value), str(err.value)
    for w in ["3 images", f"{REQUEST_PIXELS + 48:,} pixels", "max_request_pixels"]:
        assert w in str(err.value), f"{w!r} missing from: {err.value}"


def _stub_rss(server) -> int:
    procs = psutil.Process(server.pid).children(recursive=True)
    return sum(p.memory_info().rss for p in procs if "stub" in " ".join(p.cmdline()))


def test_bomb_is_rejected_before_decoding_and_good_requests_are_unaffected(server, val_images):
    model = layout.ensemble_model("digits", "fp32")
    good = pack_batch([val_images[1][0]])
    _infer(server, "grpc", model, good)
    base = []
    for _ in range(5):
        t = time.perf_counter()
        _infer(server, "grpc", model, good)
        base.append(time.perf_counter() - t)
    rss_before = _stub_rss(server)
    start = time.perf_counter()
    with pytest.raises(InferenceServerException) as err:
        _infer(server, "grpc", model, pack_batch([bomb_jpeg(), bomb_jpeg(30000, 30000)]))
    rejected_s = time.perf_counter() - start
    assert "max_image_pixels" in str(err.value)
    # 20000x20000 RGB would be 1.2 GB decoded; nothing of that size may appear.
    assert _stub_rss(server) - rss_before < 50 * 2**20
    assert rejected_s < 2.0, f"rejection took {rejected_s:.2f} s"   # measured locally: milliseconds
    t = time.perf_counter()
    _infer(server, "grpc", model, good)
    assert time.perf_counter() - t < max(0.5, 4 * float(np.median(base)))


def test_running_server_survives_its_repository_files_being_removed(server, copy_repo, val_images):
    """A rebuild swaps the repository folder under a running server: the stand-in keeps its
    serialized pipeline in memory, so the rebuild after a decode error still works."""
    model = layout.ensemble_model("digits", "fp32")
    good = pack_batch([val_images[2][0]])
    expected = _infer(server, "http", model, good)
    shutil.rmtree(copy_repo / layout.preprocess_model("digits") / "1")
    bad = val_images[3][0]
    with pytest.raises(InferenceServerException):
        _infer(server, "http", model, pack_batch([bad[: len(bad) // 2]]))   # forces a pipeline rebuild
    for _ in range(3):
        np.testing.assert_array_equal(_infer(server, "http", model, good), expected)


@pytest.fixture(scope="module")
def default_server(repo_root):
    """The cpu repository as built, with the spec's default budgets."""
    srv = LocalTritonServer(repo_root / "cpu", http_port=free_port(), grpc_port=free_port(),
                            metrics_port=free_port(), timeout_s=180)
    with srv:
        yield srv


def test_concurrent_header_bombs_cost_neither_memory_nor_latency(default_server, val_images):
    """Issue 23's probe: three concurrent requests of 10 JPEG headers declaring 7000x7000 each (49 MP,
    under the per-image limit; 490 MP per request, under the per-request one). Dynamic batching
    merges them; decoding them would take ~1.5 GB and seconds. They must be refused as truncated,
    the DALI stub must not keep growing, and a good request sent meanwhile must stay fast."""
    model = layout.ensemble_model("digits", "fp32")
    good = pack_batch([val_images[4][0]])
    _infer(default_server, "grpc", model, good)
    rss_before = _stub_rss(default_server)
    bombs = pack_batch([bomb_jpeg(7000, 7000)] * 10)

    def send_bomb(_):
        try:
            _infer(default_server, "grpc", model, bombs)
        except InferenceServerException as err:
            return err
        return None

    def timed_good():
        t = time.perf_counter()
        _infer(default_server, "grpc", model, good)
        return time.perf_counter() - t

    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(send_bomb, i) for i in range(3)]
        time.sleep(0.02)
        latency = pool.submit(timed_good).result()
        errors = [f.result() for f in futures]
    assert all(e is not None and _client_error("grpc", e) for e in errors), errors
    assert all("image 0 of 10" in str(e) and "7000x7000" in str(e) and "truncated" in str(e) for e in errors), errors
    assert latency < 0.3, f"a good request took {latency:.3f} s beside the bombs"
    growth = _stub_rss(default_server) - rss_before
    assert growth < 500 * 2**20, f"the stubs grew by {growth / 2**20:.0f} MB"
