"""The DALI preprocessing graph, self-contained: this file imports only DALI.

The builder copies this file, unchanged, into every `<model>_preprocess/1/dali.py` of the
repository and appends a few generated lines that bind the model's constants and mark one
pipeline for autoserialization (dali_backend's "Autoserialization": the backend imports the file
with the DALI of the Triton release it runs in and serializes it at model load). Nothing here may
import the project, and only operators and arguments that exist in every DALI version of the
supported Triton releases are used (DALI 1.53 to 2.1: peek_image_shape, decoders.image, resize
with a size argument input, reductions.min, reinterpret, slice with start/shape,
crop_mirror_normalize, arithmetic (bitwise included) on data nodes, DataNode.shape), and nothing
that needs DALI 2's dynamic executor; tests/test_dali_releases.py runs it under each release's DALI.

The geometry is torchvision's eval transform, computed per image from its header inside the
pipeline, so that the served tensors match what the model was trained and evaluated with:

    mode "shorter": Resize(resize) -> CenterCrop(crop)   shorter side -> resize,
                     longer side -> int(resize * long / short) (torchvision truncates)
    mode "square":  Resize((resize, resize)) -> CenterCrop(crop)
    CenterCrop anchor: int(round((size - crop) / 2)), Python's round: halves go to the even integer
    bilinear or bicubic, antialiased (PIL's filters, which torchvision and timm use on PIL images)
    then ToTensor + Normalize(mean, std), CHW float32

EXIF orientation: DALI's decoder applies it (1.53 has no switch to turn it off), torchvision's
ImageFolder loader (PIL without exif_transpose) does not, so a photo whose EXIF tag says "rotated"
is served rotated relative to what the model saw in training (docs/preprocessing.md).
"""
from nvidia.dali import fn, types

# A request's row: b"LEN:" + the image's byte count (uint32, little endian; below 2**31, so read
# here as int32) + the bytes + zero padding (contract/images.py, pack_batch); a row without the
# marker is one bare file.
LENGTH_MARKER = b"LEN:"
PREFIX_BYTES = 8
_MARKER_WORD = int.from_bytes(LENGTH_MARKER, "little")   # b"LEN:" as a little-endian int32 (positive)


def exact_bytes(encoded):
    """Each row of `encoded` trimmed to the image the client sent: the bytes after the length
    prefix, as many as it declares, or the whole row where it has none. So zero padding (up to a
    longer neighbour in the same request) never reaches the decoder, and a truncated file fails as
    truncated. A declared length past the row's end fails the run (slice's out-of-bounds error).

    Few operators on purpose: the decoder waits for all of them, and each costs a scheduling step
    and a pass over the batch on the pipeline's CPU threads (docs/gpu_ensemble.md measures the
    forms). The prefix is read as two int32 words, each sliced and reinterpreted on its own (no
    subscripts, no casts); `whole + tagged * (declared - whole)` is the declared length where the
    marker is, the row's length elsewhere (on a bare row `declared - whole` may wrap around in
    int32; it is multiplied by 0). A declared length of 2**31 or more reads as negative: slice
    refuses it like one past the row's end."""
    def word(at):
        return fn.reinterpret(fn.slice(encoded, start=[at], shape=[4], axes=[0], out_of_bounds_policy="pad"),
                              dtype=types.INT32, shape=[1])
    tagged = word(0) == _MARKER_WORD
    whole = encoded.shape(dtype=types.INT32)
    return fn.slice(encoded, tagged * PREFIX_BYTES, whole + tagged * (word(4) - whole), axes=[0])


def _center_anchor(size, crop):
    # int(round(d / 2)) with round-half-to-even, in integer arithmetic that runs on plain ints and
    # on data nodes (scalars or [H, W] vectors): k = d // 2, and an odd d adds 1 to an odd k. Data
    # nodes need d >= 0 (DALI's // truncates toward zero, Python's floors): the spec keeps crop <= resize.
    d = size - crop
    k = d // 2
    return k + (d & k & 1)


# PIL's filters by the names the spec uses (input.interpolation); PIL widens its filter support by
# the scale factor when downscaling, which is what DALI's resize does with antialiasing on.
INTERPOLATION = {"bilinear": types.INTERP_LINEAR, "bicubic": types.INTERP_CUBIC}


def preprocess_graph(encoded, device, resize, crop, mean, std, mode="shorter", hw_decoder_load=0.65,
                     preallocate_hint=None, interpolation="bilinear", antialias=True):
    """Decode -> resize -> center crop -> normalize for the request rows `encoded` (a CPU node),
    each trimmed to its image's exact bytes first (`exact_bytes`).

    device: "cpu" (all CPU operators) or "gpu" (nvJPEG "mixed" decoder, GPU resize/normalize).
    resize, crop, mode: the torchvision geometry above. mean, std: per RGB channel in [0, 1].
    hw_decoder_load: share of JPEGs for the hardware decoder (gpu only).
    preallocate_hint: (width, height) the hardware decoder preallocates its buffers for, for a
    whole batch, when the pipeline is built (gpu only; None: DALI's default, nothing up front).
    interpolation: "bilinear" or "bicubic" (PIL's filters); antialias: widen the filter when
    downscaling, as PIL does (docs/preprocessing.md measures both settings against PIL's bicubic).
    """
    if interpolation not in INTERPOLATION:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATION)}, got {interpolation!r}")
    encoded = exact_bytes(encoded)
    if mode == "square":
        size = [float(resize)] * 2
        start = [_center_anchor(resize, crop)] * 2
    elif mode == "shorter":
        # The size from the header, on the CPU (argument inputs live there): the shape of a decoded
        # GPU image would need a GPU->CPU transition, which DALI's legacy executor (the default
        # before DALI 2.0) refuses. No adjust_orientation argument: DALI 1.53 does not have it.
        # [H, W] as one vector, so each step is one operator for both axes: the resize waits for
        # these CPU operators (about 35 when computed per axis, 12 now; docs/gpu_ensemble.md).
        hw = fn.peek_image_shape(encoded, dtype=types.INT64)[0:2]
        # torchvision: the shorter side -> resize, the other -> int(resize * long / short); for
        # the shorter side (resize * short) // short is resize exactly.
        new_hw = (resize * hw) // fn.reductions.min(hw)
        size = fn.cast(new_hw, dtype=types.FLOAT)
        start = fn.cast(_center_anchor(new_hw, crop), dtype=types.INT32)   # [top, left]
    else:
        raise ValueError(f"mode must be 'shorter' or 'square', got {mode!r}")
    if device == "gpu":
        hints = {}
        if preallocate_hint:
            hints = {"preallocate_width_hint": int(preallocate_hint[0]),
                     "preallocate_height_hint": int(preallocate_hint[1])}
        images = fn.decoders.image(encoded, device="mixed", output_type=types.RGB, hw_decoder_load=hw_decoder_load,
                                   **hints)
    else:
        images = fn.decoders.image(encoded, device="cpu", output_type=types.RGB)
    images = fn.resize(images, size=size, antialias=antialias,
                       interp_type=INTERPOLATION[interpolation])
    images = fn.slice(images, start=start, shape=[crop, crop], axes=[0, 1])
    return fn.crop_mirror_normalize(images, mean=[m * 255.0 for m in mean], std=[s * 255.0 for s in std],
                                    dtype=types.FLOAT, output_layout="CHW")
