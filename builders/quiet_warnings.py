"""Third-party chatter during the precision stages, summarized instead of printed.

onnxconverter-common warns for each weight tensor with values outside fp16's range ("the float32
number ... will be truncated to ...", up to one per side and tensor): dozens of lines per model. ONNX Runtime's calibrator prints its
progress ("Collecting tensor data ...", "Number of tensors : ...") with print(), and
quantize_static logs the same advice on every call (run its pre-processing first) on the root
logger. The build reports what matters once: one log line with the count (shown with
`build_all.py -v`); everything else these tools write passes through unchanged.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings

log = logging.getLogger("builders.precision")

FP16_TRUNCATION = "the float32 number"
ORT_PROGRESS = ("Collecting tensor data", "Number of tensors", "Number of histogram bins",
                "Number of quantized bins", "Finding optimal threshold")
ORT_ADVICE = ("Please consider to run pre-processing", "Please consider pre-processing")


class _DropLines(io.TextIOBase):
    """A stdout that drops print() lines starting with one of `prefixes` and passes the rest on."""

    def __init__(self, target, prefixes: tuple[str, ...]):
        self.target, self.prefixes, self.dropped, self._eat_newline = target, prefixes, 0, False

    def write(self, s: str) -> int:
        if self._eat_newline and s == "\n":      # print() writes the end="\n" separately
            self._eat_newline = False
            return len(s)
        self._eat_newline = False
        if s.lstrip().startswith(self.prefixes):
            self.dropped += 1
            self._eat_newline = not s.endswith("\n")
            return len(s)
        return self.target.write(s)

    def flush(self) -> None:
        self.target.flush()


class _DropAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ORT_ADVICE)


@contextlib.contextmanager
def fp16_truncation_summarized():
    """Collect onnxconverter-common's per-value truncation warnings and log one line with their
    count; other warnings are shown as usual."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    clamped = [w for w in caught if str(w.message).startswith(FP16_TRUNCATION)]
    for w in caught:
        if w not in clamped:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if clamped:
        log.info("fp16: %d weight tensors hold values outside fp16's range, clamped to it (first: %s); "
                 "the fp16 variant's accuracy is measured as usual", len(clamped), clamped[0].message)


@contextlib.contextmanager
def ort_quantization_quiet(what: str):
    """Drop ONNX Runtime's calibration progress prints and its pre-processing advice while the
    block runs; log one line saying how many lines were dropped. what: the step, for that line."""
    root = logging.getLogger()
    advice = _DropAdvice()
    out = _DropLines(sys.stdout, ORT_PROGRESS)
    root.addFilter(advice)
    try:
        with contextlib.redirect_stdout(out):
            yield
    finally:
        root.removeFilter(advice)
    if out.dropped:
        log.info("%s: %d progress lines of ONNX Runtime's calibrator not shown", what, out.dropped)
