"""Properties of the contract's pure pieces over random inputs (hypothesis, modest example counts):
the DALI graph's centre-crop anchor against torchvision's CenterCrop, and the request rows'
length prefix round trip with per-image lengths. Seconds, no build, no server."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract import images
from contract.dali_pipeline import LENGTH_MARKER, PREFIX_BYTES, _center_anchor

torch = pytest.importorskip("torch")
F = pytest.importorskip("torchvision.transforms.functional")

FAST = settings(max_examples=80, deadline=None)


# (size, crop) with crop <= size: the pipeline never crops larger than its resize (CenterCrop would pad)
size_and_crop = st.integers(1, 300).flatmap(lambda crop: st.tuples(st.integers(crop, crop + 300), st.just(crop)))


@FAST
@given(size_and_crop, size_and_crop)
def test_center_anchor_is_torchvisions(height, width):
    """_center_anchor evaluated on plain ints (the graph runs the same arithmetic on data nodes)
    picks the top-left corner torchvision's CenterCrop picks, for every height/width and crop."""
    (h, ch), (w, cw) = height, width
    img = torch.arange(h * w, dtype=torch.int64).reshape(1, h, w)
    out = F.center_crop(img, [ch, cw])
    top, left = divmod(int(out[0, 0, 0]), w)
    assert (_center_anchor(h, ch), _center_anchor(w, cw)) == (top, left)


@pytest.mark.parametrize("size,crop,anchor", [(10, 5, 2), (12, 5, 4), (9, 4, 2), (11, 4, 4), (5, 5, 0), (256, 224, 16)])
def test_center_anchor_halves_go_to_the_even_integer(size, crop, anchor):
    # (10-5)/2 = 2.5 -> 2, (12-5)/2 = 3.5 -> 4: Python's round, as torchvision uses it
    assert _center_anchor(size, crop) == anchor == int(round((size - crop) / 2))


def test_pipeline_and_contract_spell_the_same_prefix():
    assert (LENGTH_MARKER, PREFIX_BYTES) == (images.LENGTH_MARKER, images.PREFIX_BYTES)


encoded_lists = st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=8)


@FAST
@given(encoded_lists)
def test_pack_then_unpack_gives_back_each_image(encoded):
    packed = images.pack_batch(encoded)
    longest = max(map(len, encoded))
    assert packed.dtype == np.uint8 and packed.shape == (len(encoded), PREFIX_BYTES + longest)
    for row, e in zip(packed, encoded):
        assert bytes(row[:4]) == LENGTH_MARKER
        assert int.from_bytes(bytes(row[4:8]), "little") == len(e)
        assert images.unpack_row(row) == e
        assert not row[PREFIX_BYTES + len(e):].any()   # the rest is zero padding


@FAST
@given(st.binary(min_size=1, max_size=64).filter(lambda b: not b.startswith(LENGTH_MARKER)))
def test_a_bare_row_is_the_whole_file(data):
    assert images.unpack_row(np.frombuffer(data, dtype=np.uint8)) == data


@pytest.mark.parametrize("bad,message", [([], "no images to pack: the batch is empty"),
                                         ([b""], "image 0 has 0 bytes; an image has 1 to 2147483647 bytes"),
                                         ([b"ok", b""], "image 1 has 0 bytes; an image has 1 to 2147483647 bytes")])
def test_pack_refuses_an_empty_batch_or_image(bad, message):
    with pytest.raises(ValueError) as err:
        images.pack_batch(bad)
    assert str(err.value) == message


@FAST
@given(st.lists(st.binary(min_size=1, max_size=16), min_size=1, max_size=10, unique=True), st.integers(1, 7))
def test_request_pool_covers_every_image_in_requests_of_batch_size(encoded, batch_size):
    pool = images.request_pool(encoded, batch_size)
    rows = [images.unpack_row(r) for req in pool for r in req]
    assert all(len(req) == batch_size for req in pool)
    assert set(rows) == set(encoded)                 # every image, nothing else
    assert len(pool) == -(-max(len(encoded), batch_size) // batch_size)
    # round robin: the rows, request after request, cycle through `encoded` in its order
    assert rows == [encoded[k % len(encoded)] for k in range(len(rows))]
    for req in pool:                                  # different images within a request where there are enough
        got = [images.unpack_row(r) for r in req]
        assert len(set(got)) == min(batch_size, len(encoded))


def test_request_pool_refuses_a_batch_size_below_one():
    with pytest.raises(ValueError, match="batch_size"):
        images.request_pool([b"x"], 0)


def test_image_folder_reads_classes_in_sorted_order(tmp_path):
    for label, names in {"b": ["2.JPG", "1.png", "notes.txt"], "a": ["z.jpeg", "y.bmp"], "c": []}.items():
        (tmp_path / label).mkdir()
        for n in names:
            (tmp_path / label / n).write_bytes(f"{label}/{n}".encode())
    (tmp_path / "stray.jpg").write_bytes(b"not in a class folder")
    s = images.load_image_folder(tmp_path)
    assert s.root == tmp_path and s.classes == ("a", "b", "c")
    assert [f"{p.parent.name}/{p.name}" for p in s.files] == ["a/y.bmp", "a/z.jpeg", "b/1.png", "b/2.JPG"]
    assert s.targets == (0, 0, 1, 1) and len(s) == 4
    assert s.encoded() == [b"a/y.bmp", b"a/z.jpeg", b"b/1.png", b"b/2.JPG"] and s.encoded(1) == [b"a/y.bmp"]


def test_image_folder_errors_name_the_folder_and_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"image folder {tmp_path / 'missing'} does not exist"):
        images.load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"has no class sub-folders \(expected <root>/<label>/<image>\)"):
        images.load_image_folder(tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.gif").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"holds no images \(\.bmp, \.jpeg, \.jpg, \.png\)"):
        images.load_image_folder(tmp_path)


def test_pack_refuses_an_image_over_the_int32_bound():
    class Huge(bytes):   # a real bytes object whose length says 2**31 (no 2 GiB allocation)
        def __len__(self):
            return images.MAX_IMAGE_BYTES + 1
    with pytest.raises(ValueError, match=r"image 1 has 2147483648 bytes; an image has 1 to 2147483647 bytes"):
        images.pack_batch([b"ok", Huge(b"x")])
