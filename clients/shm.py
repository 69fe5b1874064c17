"""System shared memory for the clients' shared_memory=True mode (server on the same machine)."""
from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np


class ShmRegions:
    """One input and one output system shared memory region, grown on demand and registered with
    the server under unique names. Reused across requests: creating and registering a region costs
    more than the copy it saves, so only reuse makes shared memory pay off for large batches.

    This class only creates, fills and frees the regions; the client owning it (un)registers them
    with the server, draining `stale` and then `pending` before a request names a region."""

    _ids = itertools.count()

    def __init__(self):
        import tritonclient.utils.shared_memory as shm

        self._shm = shm
        tag = f"tic_{os.getpid()}_{next(self._ids)}"
        self.in_name, self.out_name = f"{tag}_in", f"{tag}_out"
        self._keys = {self.in_name: f"/{tag}_in", self.out_name: f"/{tag}_out"}
        self._handles: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}
        self.pending: list[tuple[str, str, int]] = []  # (name, key, size) to (re)register with the server
        self.stale: list[str] = []                     # names to unregister first

    def _ensure(self, name: str, size: int) -> None:
        if self._sizes.get(name, 0) >= size:
            return
        size = max(size, 2 * self._sizes.get(name, 0), 1 << 16)
        if name in self._handles:
            self.stale.append(name)
            self._shm.destroy_shared_memory_region(self._handles.pop(name))
        self._handles[name] = self._shm.create_shared_memory_region(name, self._keys[name], size)
        self._sizes[name] = size
        self.pending.append((name, self._keys[name], size))

    def stage(self, batch: np.ndarray, num_classes: int) -> None:
        self._ensure(self.in_name, batch.nbytes)
        self._ensure(self.out_name, batch.shape[0] * num_classes * 4)
        self._shm.set_shared_memory_region(self._handles[self.in_name], [batch])

    def read(self, n: int, num_classes: int) -> np.ndarray:
        return self._shm.get_contents_as_numpy(self._handles[self.out_name], np.float32, [n, num_classes]).copy()

    def registered(self) -> list[str]:
        return [n for n in self._handles]

    def destroy(self) -> None:
        for h in self._handles.values():
            try:
                self._shm.destroy_shared_memory_region(h)
            except Exception:  # already gone (e.g. the server unlinked it); nothing left to free
                pass
        self._handles.clear()
        self._sizes.clear()
