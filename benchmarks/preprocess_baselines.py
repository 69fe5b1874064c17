"""The baselines benchmarks/preprocess_bench.py compares DALI with: a PIL loop (the torchvision
reference transform, one image at a time) and a torch DataLoader (torchvision transforms in N
worker processes, batches delivered to the GPU where there is one)."""
from __future__ import annotations

import io
import statistics
import time

from contract.preprocess import reference_preprocess
from contract.spec import Input


def repeat(fn, repeats: int) -> tuple[float, list[float]]:
    """(median, every run) of `repeats` calls of fn."""
    runs = [fn() for _ in range(repeats)]
    return statistics.median(runs), runs


def pil_loop(encoded: list[bytes], inp: Input) -> float:
    start = time.perf_counter()
    for e in encoded:
        reference_preprocess(e, inp)
    return len(encoded) / (time.perf_counter() - start)


class _JpegDataset:
    def __init__(self, encoded: list[bytes], inp: Input):
        import torchvision.transforms as T

        self.encoded = encoded
        self.tf = T.Compose([T.Resize(inp.resize), T.CenterCrop(inp.crop), T.ToTensor(),
                             T.Normalize(inp.mean, inp.std)])

    def __len__(self):
        return len(self.encoded)

    def __getitem__(self, i):
        from PIL import Image

        return self.tf(Image.open(io.BytesIO(self.encoded[i])).convert("RGB"))


def _one_thread(_):
    import torch

    torch.set_num_threads(1)


def dataloader_rates(encoded: list[bytes], inp: Input, workers: int, batch: int, repeats: int):
    import torch
    from torch.utils.data import DataLoader

    cuda = torch.cuda.is_available()
    loader = DataLoader(_JpegDataset(encoded, inp), batch_size=batch, num_workers=workers,
                        pin_memory=cuda, persistent_workers=workers > 0, worker_init_fn=_one_thread,
                        prefetch_factor=4 if workers > 0 else None)

    def epoch():
        start = time.perf_counter()
        n = 0
        for x in loader:
            if cuda:
                x = x.cuda(non_blocking=True)
            n += len(x)
        if cuda:
            torch.cuda.synchronize()
        return n / (time.perf_counter() - start)

    epoch()                      # starts the workers
    result = repeat(epoch, repeats)
    loader = None  # drops the DataLoader, whose persistent workers then exit
    return result
