"""contract.dali_pipeline.exact_bytes in the DALI graph itself, on the CPU, with no server in front
of it (a real dali_backend has none of the local server's checks): a packed row reaches the decoder
as exactly the bytes its prefix declares, a bare row whole, and a prefix that cannot be right fails
the run instead of decoding padding."""
from __future__ import annotations

import numpy as np
import pytest

from builders.synthetic_jpegs import make_jpegs
from contract.images import LENGTH_MARKER, PREFIX_BYTES, pack_batch
from contract.preprocess import CpuPreprocessor, write_definition
from contract.spec import Input
from tests.padding_probe import fails, truncated_hidden_by_padding

SMALL = make_jpegs(6, 320, 240)
LARGER = make_jpegs(1, 640, 480)[0]


@pytest.fixture(scope="module")
def definition(tmp_path_factory):
    return write_definition(Input(resize=256, crop=224), "cpu", tmp_path_factory.mktemp("dali") / "dali.py", 8, 2)


def test_a_truncated_image_fails_beside_a_longer_neighbour(definition):
    cut = truncated_hidden_by_padding(definition, SMALL, LARGER)
    assert cut is not None, "no cut fails alone and decodes beside zero padding; the probe needs other images"
    assert fails(definition, list(pack_batch([cut, LARGER])))


def test_each_packed_image_gets_what_it_gets_alone(definition):
    packed = CpuPreprocessor(definition)(list(pack_batch([SMALL[0], LARGER])))
    alone = [CpuPreprocessor(definition)([np.frombuffer(e, np.uint8)])[0] for e in (SMALL[0], LARGER)]
    assert np.array_equal(packed[0], alone[0]) and np.array_equal(packed[1], alone[1])


def test_a_bare_row_is_decoded_whole(definition):
    bare = CpuPreprocessor(definition)([np.frombuffer(SMALL[1], np.uint8)])[0]
    packed = CpuPreprocessor(definition)(list(pack_batch([SMALL[1]])))[0]
    assert np.array_equal(bare, packed)


@pytest.mark.parametrize("declared", [1, 2**31, 2**32 - 1], ids=["one_past_the_row", "2**31", "2**32-1"])
def test_a_declared_length_that_cannot_be_rightfails(definition, declared):
    rows = pack_batch([SMALL[2], LARGER])
    length = rows.shape[1] - PREFIX_BYTES + 1 if declared == 1 else declared
    rows[0, 4:8] = np.frombuffer(length.to_bytes(4, "little"), np.uint8)
    assert fails(definition, list(rows))


@pytest.mark.parametrize("size", [4, 5, 7])
def test_a_row_shorter_than_its_prefixfails(definition, size):
    row = np.frombuffer((LENGTH_MARKER + b"\x03\x00\x00\x00")[:size], np.uint8)
    assert fails(definition, [row])
