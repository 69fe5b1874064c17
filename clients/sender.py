"""A low-overhead sender: tritonclient's own client, made with the toolkit's connection settings
(address, TLS, the restricted-API key) and nothing added per request.

For load generators, whose own CPU time is part of what they measure (the Locust users, the
multi-process gRPC load generator of benchmarks.multiprocess_load) and for one-off calls in benchmarks. It
does no retries, no error rewording and no packing of images: the caller builds its inputs once
(`input`, `shm_input`) and sends them as often as it likes. clients.triton.TritonClient is the
full client (readiness, retries, errors that say what to do, top-k).

    with Sender("127.0.0.1:8001", "grpc") as s:
        logits = s.infer_array("digits_fp32", "IMAGE", rows, "LOGITS")
"""
from __future__ import annotations

import numpy as np

from clients.connection import auth_headers, split_url, tls_kwargs, tritonclient_module
from clients.served_models import normalize_statistics


class Sender:
    """One connection to a Triton server. Not for concurrent use from several threads: one per thread."""

    def __init__(self, url: str | None = None, protocol: str = "grpc", *, timeout_s: float | None = None,
                 api_key: str | None = None, ca_cert: str | None = None):
        """url: host:port, http(s)://host:port or grpc(s)://host:port (https/grpcs: TLS); protocol:
        "http" or "grpc"; timeout_s: the longest wait for one answer (None: tritonclient's default);
        api_key: the restricted-API key, sent with the shared-memory and statistics calls only
        (default: $TRITON_API_KEY, else the local launcher's key file for this port; inference is
        not restricted and goes without it); ca_cert: PEM file of the CA to
        trust over TLS."""
        self.protocol = protocol
        self.url, tls = split_url(url, protocol)
        self.timeout_s = timeout_s
        self.mod = tritonclient_module(protocol, aio=False)
        kw: dict = {}
        if protocol == "http":
            # One connection, one request at a time, like a gRPC channel used by one caller.
            kw["concurrency"] = 1
            if timeout_s:
                kw.update(connection_timeout=timeout_s, network_timeout=timeout_s)
        if tls:
            kw.update(tls_kwargs(protocol, False, ca_cert))
        self.client = self.mod.InferenceServerClient(self.url, **kw)
        self.headers = auth_headers(self.url, protocol, api_key)

    def input(self, name: str, array: np.ndarray, datatype: str = "UINT8"):
        """An input holding `array` (sent in the request body; binary over HTTP)."""
        inp = self.mod.InferInput(name, list(array.shape), datatype)
        if self.protocol == "http":
            inp.set_data_from_numpy(array, binary_data=True)
        else:
            inp.set_data_from_numpy(array)
        return inp

    def shm_input(self, name: str, shape: list[int], region: str, nbytes: int, datatype: str = "UINT8"):
        """An input that names a registered shared-memory region instead of carrying the bytes."""
        inp = self.mod.InferInput(name, list(shape), datatype)
        inp.set_shared_memory(region, nbytes)
        return inp

    def output(self, name: str):
        """A requested output, returned in the response (binary over HTTP)."""
        if self.protocol == "http":
            return self.mod.InferRequestedOutput(name, binary_data=True)
        return self.mod.InferRequestedOutput(name)

    def infer(self, model: str, inputs: list, outputs: list | None = None):
        """tritonclient's InferResult of one request; tritonclient's exceptions as they come."""
        kw = {"client_timeout": self.timeout_s} if self.protocol == "grpc" and self.timeout_s else {}
        # No key: inference is not a restricted API, and a load generator sends nothing extra.
        # (Never a shared headers dict either: tritonclient's HTTP infer writes the request's JSON
        # length into the dict it is given, and a stale length breaks the next request.)
        return self.client.infer(model, inputs, outputs=outputs, **kw)

    def infer_array(self, model: str, input_name: str, array: np.ndarray, output_name: str) -> np.ndarray:
        """The output `output_name` for one UINT8 array sent as `input_name`."""
        return self.infer(model, [self.input(input_name, array)], [self.output(output_name)]).as_numpy(output_name)

    def register_system_shared_memory(self, name: str, key: str, nbytes: int) -> None:
        self.client.register_system_shared_memory(name, key, nbytes, headers=self.headers)

    def unregister_system_shared_memory(self, name: str) -> None:
        self.client.unregister_system_shared_memory(name, headers=self.headers)

    def statistics(self) -> dict:
        """Triton's per-model statistics now, in clients.served_models.normalize_statistics' form."""
        kw = {"as_json": True} if self.protocol == "grpc" else {}
        return normalize_statistics(self.client.get_inference_statistics(headers=self.headers, **kw))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
