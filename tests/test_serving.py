"""End to end: a real tritonserver (from nvidia-pytriton) serving the cpu repository through the
DALI and ONNX Runtime stand-ins, checked against the same artifacts run in-process.

One server per module (free ports) keeps the suite fast, on the session's repository (`repo_root`
in tests/conftest.py).

Tolerance: server and in-process run the very same dali.py and model.onnx with the same DALI
and ONNX Runtime versions, so preprocessing is bit-identical; logits differ only where ONNX Runtime
picks another kernel path for another batch size or thread count (dynamic batching changes the
batch), a few float32 ulps. Allowed: |served - local| <= ATOL + RTOL * |local|, with ATOL 1e-4 for
fp32 and 1e-3 for fp16/int8 (half-precision accumulation; re-quantized activations), RTOL 1e-4.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from builders import triton_config
from contract import layout
from contract.images import pack_batch
from contract.preprocess import CpuPreprocessor
from serving.local_server import LocalTritonServer, free_port
from tests.padding_probe import truncated_hidden_by_padding, zero_padded

pytestmark = pytest.mark.server

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

PROTOCOLS = ("http", "grpc")
TOL = {"fp32": 1e-4, "fp16": 1e-3, "int8": 1e-3}
RTOL = 1e-4


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images(val_images) -> list[tuple[bytes, int]]:
    return list(val_images)


@pytest.fixture(scope="module")
def repo(repo_root) -> Path:
    return repo_root / "cpu"


@pytest.fixture(scope="module")
def model_name(repo) -> str:
    names = sorted(p.name[: -len("_preprocess")] for p in repo.glob("*_preprocess") if p.is_dir())
    assert names, f"no *_preprocess model in {repo}"
    return names[0]


@pytest.fixture(scope="module")
def repo_manifest(repo_root) -> dict:
    path = repo_root / layout.MANIFEST_FILE
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture(scope="module")
def max_batch(repo, model_name) -> int:
    cfg = triton_config.read_config(repo / layout.ensemble_model(model_name, "fp32") / "config.pbtxt")
    return cfg.max_batch_size


@pytest.fixture(scope="module")
def server(repo):
    srv = LocalTritonServer(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                            timeout_s=180)
    with srv:
        yield srv


class Local:
    """The same dali.py + model.onnx, in this process: the reference the server must match."""

    def __init__(self, repo: Path, name: str):
        import onnxruntime as ort

        pre_cfg = triton_config.read_config(repo / layout.preprocess_model(name) / "config.pbtxt")
        threads = int(pre_cfg.parameters["num_threads"].string_value or 2)
        self.pre = CpuPreprocessor(repo / layout.preprocess_model(name) / "1" / layout.DALI_DEFINITION,
                                   num_threads=threads)
        self.repo, self.name, self._ort, self._sessions = repo, name, ort, {}

    def session(self, precision: str):
        if precision not in self._sessions:
            path = self.repo / layout.engine_model(self.name, precision) / "1" / "model.onnx"
            self._sessions[precision] = self._ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return self._sessions[precision]

    def logits(self, precision: str, encoded: list[bytes]) -> np.ndarray:
        batch = pack_batch(encoded)
        x = self.pre([row for row in batch])
        return self.session(precision).run([layout.ENGINE_OUTPUT], {layout.ENGINE_INPUT: x})[0]


@pytest.fixture(scope="module")
def local(repo, model_name) -> Local:
    return Local(repo, model_name)


def _client(server, protocol):
    if protocol == "http":
        return httpclient.InferenceServerClient(server.http_url, network_timeout=60.0)
    return grpcclient.InferenceServerClient(server.grpc_url)


def infer(server, protocol: str, model: str, data: np.ndarray, dtype: str = "UINT8") -> np.ndarray:
    """One request; returns LOGITS or raises InferenceServerException."""
    mod = httpclient if protocol == "http" else grpcclient
    client = _client(server, protocol)
    try:
        inp = mod.InferInput(layout.ENSEMBLE_INPUT, list(data.shape), dtype)
        if protocol == "http":
            inp.set_data_from_numpy(data, binary_data=True)
        else:
            inp.set_data_from_numpy(data)
        out = mod.InferRequestedOutput(layout.ENSEMBLE_OUTPUT)
        result = client.infer(model, [inp], outputs=[out])
        return result.as_numpy(layout.ENSEMBLE_OUTPUT)
    finally:
        client.close()


def assert_close(served: np.ndarray, ref: np.ndarray, precision: str):
    assert served.shape == ref.shape, f"shape {served.shape} != {ref.shape}"
    diff = np.abs(served - ref)
    allowed = TOL[precision] + RTOL * np.abs(ref)
    worst = float(diff.max())
    assert np.all(diff <= allowed), f"{precision}: max |served - local| = {worst:.3g} > {TOL[precision]:g} (+rtol)"


def _precision_available(repo, model_name, manifest, precision):
    if not (repo / layout.ensemble_model(model_name, precision)).is_dir():
        note = _manifest_note(manifest, precision)
        pytest.skip(f"{precision} ensemble not in the repository{': ' + note if note else ''}")


def _manifest_note(manifest, precision) -> str:
    """The builder's stated reason for a missing precision, wherever the manifest keeps it."""
    found = []

    def walk(node, key_path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, key_path + [str(k)])
        elif isinstance(node, list):
            for v in node:
                walk(v, key_path)
        elif isinstance(node, str) and precision in " ".join(key_path) and any(
                w in " ".join(key_path).lower() for w in ("reason", "skip", "note")):
            found.append(node)
    walk(manifest, [])
    return "; ".join(found)


# --- correctness --------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_logits_match_in_process(server, local, repo, model_name, repo_manifest, images, max_batch, protocol, precision):
    _precision_available(repo, model_name, repo_manifest, precision)
    model = layout.ensemble_model(model_name, precision)
    for size in (1, max_batch):
        encoded = [b for b, _ in images[:size]]
        served = infer(server, protocol, model, pack_batch(encoded))
        assert_close(served, local.logits(precision, encoded), precision)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_concurrent_requests_get_their_own_answers(server, local, model_name, images, max_batch, protocol):
    model = layout.ensemble_model(model_name, "fp32")
    rng = np.random.default_rng(1)
    jobs = []
    for _ in range(24):
        size = int(rng.integers(1, max_batch + 1))
        picks = rng.choice(len(images), size=size, replace=False)
        jobs.append([images[i][0] for i in picks])   # byte lengths differ: ragged across requests
    with cf.ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda enc: infer(server, protocol, model, pack_batch(enc)), jobs))
    for enc, out in zip(jobs, served):
        assert_close(out, local.logits("fp32", enc), "fp32")


# --- errors -------------------------------------------------------------------------------------

def _truncated(jpeg: bytes) -> bytes:
    # A real JPEG header (passes any format sniffing) whose data ends early: DALI's decoder fails.
    return jpeg[: len(jpeg) // 2]


BAD_INPUTS = {
    # case: (make(images, max_batch) -> (model_suffix, array, dtype), words the message must contain)
    "corrupt_bytes": (lambda imgs, mb: ("fp32", pack_batch([b"this is not an image" * 20]), "UINT8"),
                      "not an encoded image"),
    "truncated_jpeg": (lambda imgs, mb: ("fp32", pack_batch([_truncated(imgs[0][0])]), "UINT8"),
                       "could not be decoded"),
    "empty_tensor": (lambda imgs, mb: ("fp32", np.zeros((1, 0), np.uint8), "UINT8"), "empty"),
    "all_padding": (lambda imgs, mb: ("fp32", np.zeros((1, 64), np.uint8), "UINT8"), "empty"),
    "wrong_dtype": (lambda imgs, mb: ("fp32", pack_batch([imgs[0][0]]).astype(np.int32), "INT32"), "UINT8"),
    "batch_above_max": (lambda imgs, mb: ("fp32", pack_batch([imgs[i % len(imgs)][0] for i in range(mb + 1)]),
                                          "UINT8"), "batch"),
    "unknown_model": (lambda imgs, mb: ("no_such_precision", pack_batch([imgs[0][0]]), "UINT8"), "unknown model"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_alone_and_server_keeps_serving(server, local, model_name, images, max_batch, protocol, case):
    make, words = BAD_INPUTS[case]
    suffix, data, dtype = make(images, max_batch)
    with pytest.raises(InferenceServerException) as err:
        infer(server, protocol, layout.ensemble_model(model_name, suffix), data, dtype)
    assert words.lower() in str(err.value).lower(), f"unhelpful message: {err.value}"
    good = [images[1][0]]
    assert_close(infer(server, protocol, layout.ensemble_model(model_name, "fp32"), pack_batch(good)),
                 local.logits("fp32", good), "fp32")


def _executions(server, model: str) -> int:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        return int(client.get_inference_statistics(model)["model_stats"][0]["execution_count"])
    finally:
        client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("bad", ["truncated_jpeg", "corrupt_bytes"])
def test_corrupt_image_fails_only_its_own_concurrent_request(server, local, model_name, images, max_batch,
                                                             protocol, bad):
    """Requests sent together share one dynamic batch, i.e. one execute() of the DALI stand-in.

    The statistics prove it: fewer executions than requests. Thread timing decides the batching,
    so the round is repeated (at most 4 times) until it happened.
    """
    model = layout.ensemble_model(model_name, "fp32")
    pre = layout.preprocess_model(model_name)
    broken = _truncated(images[0][0]) if bad == "truncated_jpeg" else b"\x00garbage" * 40
    jobs = [[images[i][0], images[i + 1][0]] for i in range(2, 2 + 2 * 5, 2)]
    jobs.insert(2, [images[20][0], broken])   # one good image next to the bad one: the request fails whole

    def send(enc):
        barrier.wait()
        try:
            return infer(server, protocol, model, pack_batch(enc))
        except InferenceServerException as e:
            return e

    for _ in range(4):
        barrier = threading.Barrier(len(jobs))
        before = _executions(server, pre)
        with cf.ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(send, jobs))
        for i, (enc, res) in enumerate(zip(jobs, results)):
            if i == 2:
                assert isinstance(res, InferenceServerException), "the request with the corrupt image succeeded"
                assert "image 1 of 2" in str(res), f"message does not name the image: {res}"
            else:
                assert not isinstance(res, Exception), f"good request {i} failed: {res}"
                assert_close(res, local.logits("fp32", enc), "fp32")
        if _executions(server, pre) - before < len(jobs):
            return
    pytest.fail("the concurrent requests never shared a batch, so the one-bad-image case was not exercised")


# --- exact bytes per image ---------------------------------------------------------------------

def _neighbour_probe(images, definition: Path) -> tuple[bytes, bytes]:
    """(a truncated JPEG, a longer valid one) such that the truncated one fails alone but decodes
    beside its neighbour in the old padded format: the issue's batch-neighbour probe, found by
    cutting small images."""
    by_size = sorted((img for img, _ in images), key=len)
    cut = truncated_hidden_by_padding(definition, by_size[:10], by_size[-1])
    if cut is None:
        pytest.fail("no cut of the small images fails alone and decodes beside zero padding; the probe needs "
                    "another image set")
    return cut, by_size[-1]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_truncated_image_fails_whatever_its_neighbour(repo, model_name, server, images, protocol):
    truncated, larger = _neighbour_probe(images, repo / layout.preprocess_model(model_name) / "1" / layout.DALI_DEFINITION)
    with pytest.raises(InferenceServerException) as err:
        infer(server, protocol, layout.ensemble_model(model_name, "fp32"), pack_batch([truncated, larger]))
    assert "image 0 of 2" in str(err.value) and "could not be decoded" in str(err.value), str(err.value)
    assert str(err.value.status()) in ("400", "StatusCode.INVALID_ARGUMENT"), err.value.status()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_bare_file_is_a_request(server, local, model_name, images, protocol):
    """What generic Triton clients and the dali_backend examples send: one file, no prefix."""
    image = images[3][0]
    served = infer(server, protocol, layout.ensemble_model(model_name, "fp32"), np.frombuffer(image, np.uint8)[None])
    assert_close(served, local.logits("fp32", [image]), "fp32")


AMBIGUOUS = {
    "bare_rows": (lambda a, b: zero_padded([a, b]), "image 0 of 2 in input"),
    "length_past_row": (lambda a, b: _overlong(pack_batch([a, b])), "declares"),
}


def _overlong(packed: np.ndarray) -> np.ndarray:
    packed[1, 4:8] = np.frombuffer((packed.shape[1]).to_bytes(4, "little"), np.uint8)   # past the row's end
    return packed


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
def test_multi_image_request_that_cannot_be_read_gets_400(server, model_name, images, case):
    make, words = AMBIGUOUS[case]
    with pytest.raises(InferenceServerException) as err:
        infer(server, "http", layout.ensemble_model(model_name, "fp32"), make(images[0][0], images[1][0]))
    assert words in str(err.value) and "pack_batch" in str(err.value), str(err.value)
    assert str(err.value.status()) == "400", err.value.status()


def test_length_prefix_is_spelled_alike_everywhere():
    """contract/images.py, the generated dali.py and the stand-in must agree on the prefix bytes."""
    from contract import dali_pipeline, images as images_mod

    stand_in = (Path(__file__).parents[1] / "serving/backends/dali/model.py").read_text()
    assert (dali_pipeline.LENGTH_MARKER, dali_pipeline.PREFIX_BYTES) == (images_mod.LENGTH_MARKER,
                                                                         images_mod.PREFIX_BYTES)
    assert f'_LENGTH_MARKER = np.frombuffer(b"{images_mod.LENGTH_MARKER.decode()}"' in stand_in
    assert f"_PREFIX_BYTES = {images_mod.PREFIX_BYTES}\n" in stand_in


# --- lifecycle ----------------------------------------------------------------------------------

def test_server_stops_with_no_process_left(repo, model_name, images):
    srv = LocalTritonServer(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                            timeout_s=180)
    with srv:
        infer(srv, "http", layout.ensemble_model(model_name, "fp32"), pack_batch([images[0][0]]))
        proc = psutil.Process(srv.pid)
        family = [proc] + proc.children(recursive=True)
        stubs = [p for p in family if "stub" in p.name()]
        assert stubs, "expected python backend stub processes under tritonserver"
    deadline = time.monotonic() + 10
    alive = family
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.1)
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
    assert not srv.is_running()


def test_start_failure_says_why(tmp_path, repo, model_name):
    """A repository whose model cannot load: the error carries the server log's reason."""
    import shutil

    broken = tmp_path / "cpu"
    shutil.copytree(repo / layout.preprocess_model(model_name), broken / layout.preprocess_model(model_name))
    (broken / layout.preprocess_model(model_name) / "1" / layout.DALI_DEFINITION).write_text("not a pipeline definition (")
    srv = LocalTritonServer(broken, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                            timeout_s=60)
    with pytest.raises(Exception) as err:
        srv.start()
    assert "could not build a DALI pipeline" in str(err.value) and layout.DALI_DEFINITION in str(err.value), \
        str(err.value)
    assert not srv.is_running()
