"""Triton model configs, built as Triton's own ModelConfig protobuf messages.

Building the message (not a text template) means a wrong field name or enum fails here, at
build time, instead of when tritonserver loads the repository.
"""
from __future__ import annotations

import os
import tempfile

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from contract import layout
from contract.preprocess import warmup_batch_sizes
from contract.spec import ModelSpec


def _dynamic_batching(spec: ModelSpec) -> mc.ModelDynamicBatching:
    t = spec.triton
    return mc.ModelDynamicBatching(preferred_batch_size=list(t.preferred_batch_sizes),
                                   max_queue_delay_microseconds=t.max_queue_delay_us)


def _instances(target: str, spec: ModelSpec) -> list[mc.ModelInstanceGroup]:
    if target == "gpu":
        return [mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_GPU, count=spec.triton.gpu_instances)]
    return [mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=spec.triton.cpu_instances)]


def _param(value) -> mc.ModelParameter:
    return mc.ModelParameter(string_value=str(value))


WARMUP_DIR = "warmup"  # Triton reads input_data_file from <model>/warmup/


def _warmup(spec: ModelSpec, name: str, data_type: int, dims: list[int], data_file: str) -> list[mc.ModelWarmup]:
    """Warm-up with a real image at max_batch_size, then at batch 1 (Triton runs them in this
    order before the model is ready), so the first user requests do not pay for lazy initialization
    (DALI buffers, TensorRT/ONNX Runtime kernels for that shape). Largest first: the first batch a
    DALI pipeline runs sizes its decoder's batch resources (contract.preprocess.warmup_batch_sizes)."""
    inp = mc.ModelWarmup.Input(data_type=data_type, dims=dims, input_data_file=data_file)
    return [mc.ModelWarmup(name=f"real_image_batch_{b}", batch_size=b, inputs={name: inp})
            for b in warmup_batch_sizes(spec.triton.max_batch_size)]


def preprocess_config(spec: ModelSpec, target: str, warmup_image_bytes: int | None = None) -> mc.ModelConfig:
    """DALI backend model: encoded bytes in, normalized CHW float out.

    warmup_image_bytes: length of `warmup/image.jpg`, when the model folder has one."""
    t = spec.triton
    cfg = mc.ModelConfig(
        name=layout.preprocess_model(spec.name),
        backend="dali",
        max_batch_size=t.max_batch_size,
        input=[mc.ModelInput(name=layout.DALI_INPUT, data_type=mc.TYPE_UINT8, dims=[-1],
                             allow_ragged_batch=t.ragged_input)],
        output=[mc.ModelOutput(name=layout.DALI_OUTPUT, data_type=mc.TYPE_FP32,
                               dims=[3, spec.input.crop, spec.input.crop])],
        instance_group=_instances(target, spec),
        dynamic_batching=_dynamic_batching(spec),
    )
    threads = t.dali_gpu_num_threads if target == "gpu" else t.dali_num_threads
    cfg.parameters["num_threads"].CopyFrom(_param(threads))
    # The pixel budget: checked from the image headers by the local server's DALI stand-in; the
    # official DALI backend ignores parameters it does not know, so there it documents the limit
    # that must be enforced in front of Triton (docs/hardening.md).
    cfg.parameters["max_image_pixels"].CopyFrom(_param(t.max_image_pixels))
    cfg.parameters["max_request_pixels"].CopyFrom(_param(t.max_request_pixels))
    if warmup_image_bytes:
        cfg.model_warmup.extend(_warmup(spec, layout.DALI_INPUT, mc.TYPE_UINT8, [warmup_image_bytes], "image.jpg"))
    return cfg


def _network_config(spec: ModelSpec, target: str, name: str, input_name: str, output_name: str,
                    num_classes: int, **fields) -> mc.ModelConfig:
    """What every network model shares: the preprocessed image in (FP32 CHW at the crop size),
    logits out with the labels file, the spec's batching and instances; `fields`: the rest."""
    t = spec.triton
    return mc.ModelConfig(
        name=name, max_batch_size=t.max_batch_size,
        input=[mc.ModelInput(name=input_name, data_type=mc.TYPE_FP32, dims=[3, spec.input.crop, spec.input.crop])],
        output=[mc.ModelOutput(name=output_name, data_type=mc.TYPE_FP32, dims=[num_classes],
                               label_filename=layout.LABELS_FILE)],
        instance_group=_instances(target, spec), dynamic_batching=_dynamic_batching(spec), **fields)


def engine_config(spec: ModelSpec, target: str, precision: str, num_classes: int,
                  plan_file: str = "model.plan", compute_capability: str | None = None,
                  warmup: bool = False, other_plans: dict[str, str] | None = None) -> mc.ModelConfig:
    """The network: ONNX Runtime on the cpu target, a TensorRT plan on the gpu target.

    A plan runs only on the GPU architecture it was built for: with `compute_capability` the
    plan is listed in cc_model_filenames, so plans for several architectures can sit side by side.
    other_plans: compute capability -> plan file built earlier for another GPU architecture.
    warmup: the model folder has `warmup/input.fp32`, a preprocessed real image.
    """
    t = spec.triton
    cfg = _network_config(spec, target, layout.engine_model(spec.name, precision), layout.ENGINE_INPUT,
                          layout.ENGINE_OUTPUT, num_classes)
    if target == "gpu":
        cfg.platform = "tensorrt_plan"
        cfg.default_model_filename = plan_file
        if compute_capability:
            cfg.cc_model_filenames[compute_capability] = plan_file
        for cc, other in (other_plans or {}).items():
            cfg.cc_model_filenames[cc] = other
    else:
        cfg.platform = "onnxruntime_onnx"
        cfg.default_model_filename = "model.onnx"
        cfg.parameters["intra_op_thread_count"].CopyFrom(_param(t.onnx_intra_op_threads))
    if warmup:
        cfg.model_warmup.extend(_warmup(spec, layout.ENGINE_INPUT, mc.TYPE_FP32,
                                        [3, spec.input.crop, spec.input.crop], "input.fp32"))
    return cfg


def torchscript_config(spec: ModelSpec, target: str, precision: str, num_classes: int,
                       warmup: bool = False) -> mc.ModelConfig:
    """The PyTorch-backend twin of the network: TorchScript `1/model.pt` on Triton's LibTorch backend.

    Tensors are named <name>__<index> (the backend binds TorchScript arguments by position); FP32 in
    and out at every precision (an fp16 script casts inside). KIND_GPU instances load the script
    onto their GPU. FORCE_CPU_ONLY_INPUT_TENSORS=no is read only by the local server's python
    stand-in (so it receives the DALI model's GPU output as a GPU tensor); the real backend ignores it.
    warmup: the model folder has `warmup/input.fp32`, a preprocessed real image."""
    cfg = _network_config(spec, target, layout.engine_model(spec.name, precision, layout.TORCH_BACKEND),
                          layout.TORCH_INPUT, layout.TORCH_OUTPUT, num_classes,
                          platform="pytorch_libtorch", default_model_filename="model.pt")
    if target == "gpu":
        cfg.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].CopyFrom(_param("no"))
    if warmup:
        cfg.model_warmup.extend(_warmup(spec, layout.TORCH_INPUT, mc.TYPE_FP32,
                                        [3, spec.input.crop, spec.input.crop], "input.fp32"))
    return cfg


def ensemble_config(spec: ModelSpec, precision: str, num_classes: int, backend: str | None = None) -> mc.ModelConfig:
    """What users call: encoded image bytes in, logits (and top-k labels) out.

    backend: None (TensorRT / ONNX Runtime network) or 'torch' (the TorchScript twin)."""
    pre, eng = layout.preprocess_model(spec.name), layout.engine_model(spec.name, precision, backend)
    eng_in, eng_out = layout.engine_io(backend)
    step = mc.ModelEnsembling.Step
    return mc.ModelConfig(
        name=layout.ensemble_model(spec.name, precision, backend),
        platform="ensemble",
        max_batch_size=spec.triton.max_batch_size,
        input=[mc.ModelInput(name=layout.ENSEMBLE_INPUT, data_type=mc.TYPE_UINT8, dims=[-1])],
        output=[mc.ModelOutput(name=layout.ENSEMBLE_OUTPUT, data_type=mc.TYPE_FP32, dims=[num_classes],
                               label_filename=layout.LABELS_FILE)],
        ensemble_scheduling=mc.ModelEnsembling(step=[
            step(model_name=pre, model_version=-1,
                 input_map={layout.DALI_INPUT: layout.ENSEMBLE_INPUT},
                 output_map={layout.DALI_OUTPUT: "preprocessed_image"}),
            step(model_name=eng, model_version=-1,
                 input_map={eng_in: "preprocessed_image"},
                 output_map={eng_out: layout.ENSEMBLE_OUTPUT}),
        ]),
    )


def to_text(cfg: mc.ModelConfig) -> str:
    return text_format.MessageToString(cfg)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` to a private temporary file beside `path`, then rename it over `path`: a reader
    (or Triton's repository poller) sees the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_config(cfg: mc.ModelConfig, model_dir: Path) -> Path:
    """Write `cfg` as `<model_dir>/config.pbtxt` (atomically; config search rewrites live repositories)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(model_dir / "config.pbtxt", to_text(cfg))


def read_config(path: Path) -> mc.ModelConfig:
    """Parse a config.pbtxt with the ModelConfig schema (raises on any unknown field)."""
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())
