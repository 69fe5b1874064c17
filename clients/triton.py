"""A small client for the toolkit's Triton ensembles, over HTTP or gRPC, sync or asyncio.

    with TritonClient("127.0.0.1:8000", protocol="http") as client:
        pred = client.infer("digits_fp32", [open("a.jpg", "rb").read()], top_k=3)
        pred.logits            # float32 [N, num_classes]
        pred.top_k[0]          # [Top(label="7", score=0.98, index=7, logit=9.4), ...]

    async with AsyncTritonClient("127.0.0.1:8001", protocol="grpc") as client:
        pred = await client.infer("digits_fp32", images, top_k=3)     # same result

One request is one batch: encoded images are packed one per row, each behind its byte count and
zero-padded to the longest (contract.images.pack_batch; the pipeline decodes exactly the bytes sent,
never a neighbour's padding) and sent as the ensemble's UINT8 [N, bytes] input; `infer_many` splits a longer list into requests of at most max_batch_size.

Top-k: the client always fetches the raw logits and computes top-k itself (softmax scores), with the
labels the server serves (the output's label_filename). The labels are read once per model through
Triton's classification extension (one small request with class_count = num_classes, parsed from
"score:index:label"). Why not class_count on every request: with it Triton returns only the formatted
strings (6 decimals), not the logits that verify and the runners compare.

Errors are rewritten into TritonClientError subclasses whose message says what to do: the server
cannot be reached (URL, how to start the local server), is not ready (which models failed and why),
the model is unknown (lists the available ones), or a batch is larger than max_batch_size.
Connection failures are retried with exponential backoff within `timeout_s`; other errors are not,
since repeating a rejected request cannot help.

This module is the public API: the two clients, their exceptions and what they return. They are
built in private modules (clients._base: what both share, clients._sync, clients._aio); the pieces
that need no server connection are public modules of their own: clients.errors (the exceptions,
classifying transport errors), clients.results (Prediction/Top/ModelInfo, top-k, parsing config and
labels), clients.served_models (index/statistics normalization, model naming), clients.connection (URL,
protocol, CLI flags) and clients.shm (the shared memory regions).
"""
from __future__ import annotations

from clients._aio import AsyncTritonClient
from clients._base import as_padded
from clients._sync import TritonClient
from clients.errors import (ApiRestricted, BatchTooLarge, ConnectionLost, ModelNotReady, RequestTimeout,
                            ServerNotReady, ServerUnavailable, TritonClientError, UnknownModel)
from clients.results import ModelInfo, Prediction, Top

__all__ = ["TritonClient", "AsyncTritonClient", "as_padded", "Prediction", "Top", "ModelInfo",
           "TritonClientError", "ServerUnavailable", "ServerNotReady", "ModelNotReady", "UnknownModel",
           "BatchTooLarge", "RequestTimeout", "ConnectionLost", "ApiRestricted"]
