"""The search space: per composing model of an ensemble, the knobs the search turns, how they are
read from a repository and how a candidate is written into one.

Knobs: instance count, dynamic batcher max_queue_delay_microseconds, preferred batch sizes (the
model's own list or none), and for a DALI model on the gpu target num_threads (a config parameter)
and hw_decoder_load (a constant in dali.py's PREPROCESS literal, the only place the backend reads it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from builders import triton_config
from contract import layout
from contract.errors import USAGE, ToolkitError
from contract.preprocess import read_definition_params, with_definition_params

# dali.py binds its constants in one literal line (contract.preprocess._GENERATED).


class SpaceError(ToolkitError, ValueError):
    """The repository or a search option does not fit the search (no ensemble, bad knob value)."""

    exit_code = USAGE


@dataclass(frozen=True)
class Knobs:
    """One composing model's settings. preferred: the preferred batch sizes, () for none;
    num_threads / hw_decoder_load: None where the model has no such setting (not DALI, cpu target)."""

    instances: int
    delay_us: int
    preferred: tuple[int, ...]
    num_threads: int | None = None
    hw_decoder_load: float | None = None

    def label(self) -> str:
        text = f"i{self.instances} d{self.delay_us} p{'/'.join(map(str, self.preferred)) or '-'}"
        if self.num_threads is not None:
            text += f" t{self.num_threads}"
        if self.hw_decoder_load is not None:
            text += f" hw{self.hw_decoder_load:g}"
        return text


Config = dict  # composing model name -> Knobs (insertion order = the ensemble's step order)


def config_key(cfg: Config) -> str:
    return "; ".join(f"{m}: {k.label()}" for m, k in cfg.items())


def config_json(cfg: Config) -> dict:
    return {m: asdict(k) for m, k in cfg.items()}


def ensemble_steps(repo: Path, ensemble: str) -> list[str]:
    """The composing models of `ensemble` in `repo`, in step order."""
    path = Path(repo) / ensemble / "config.pbtxt"
    if not path.is_file():
        have = sorted(p.name for p in Path(repo).iterdir() if (p / "config.pbtxt").is_file()) if Path(repo).is_dir() else []
        raise SpaceError(f"no model {ensemble!r} in {repo} (it has {have})")
    cfg = triton_config.read_config(path)
    if cfg.platform != "ensemble":
        raise SpaceError(f"{ensemble!r} in {repo} is not an ensemble (platform {cfg.platform or cfg.backend!r})")
    return [s.model_name for s in cfg.ensemble_scheduling.step]


def is_gpu(cfg: mc.ModelConfig) -> bool:
    return any(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in cfg.instance_group)


def read_knobs(model_dir: Path) -> Knobs:
    """The knobs as `model_dir`'s config.pbtxt (and dali.py) set them now."""
    cfg = triton_config.read_config(model_dir / "config.pbtxt")
    dali = cfg.backend == "dali"
    gpu = is_gpu(cfg)
    threads = cfg.parameters["num_threads"].string_value if "num_threads" in cfg.parameters else ""
    hw = None
    if dali and gpu:
        hw = float(_preprocess_params(model_dir / "1" / layout.DALI_DEFINITION).get("hw_decoder_load", 0.0))
    return Knobs(instances=sum(g.count for g in cfg.instance_group) or 1,
                 delay_us=int(cfg.dynamic_batching.max_queue_delay_microseconds),
                 preferred=tuple(cfg.dynamic_batching.preferred_batch_size),
                 num_threads=int(threads) if dali and gpu and threads else None, hw_decoder_load=hw)


def read_config(repo: Path, ensemble: str) -> Config:
    return {m: read_knobs(Path(repo) / m) for m in ensemble_steps(repo, ensemble)}


def _preprocess_params(dali_file: Path) -> dict:
    params = read_definition_params(dali_file.read_text())
    if params is None:
        raise SpaceError(f"{dali_file}: no `PREPROCESS = {{...}}` line (not written by this toolkit's builder)")
    return params


def apply_knobs(model_dir: Path, knobs: Knobs) -> None:
    """Write `knobs` into `model_dir`'s config.pbtxt (and dali.py); every other field is kept."""
    path = model_dir / "config.pbtxt"
    cfg = triton_config.read_config(path)
    if not cfg.instance_group:
        cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_AUTO)
    del cfg.instance_group[1:]   # one group: the count is the knob
    cfg.instance_group[0].count = knobs.instances
    cfg.dynamic_batching.max_queue_delay_microseconds = knobs.delay_us
    del cfg.dynamic_batching.preferred_batch_size[:]
    cfg.dynamic_batching.preferred_batch_size.extend(knobs.preferred)
    if knobs.num_threads is not None:
        cfg.parameters["num_threads"].string_value = str(knobs.num_threads)
    triton_config.write_config(cfg, model_dir)
    if knobs.hw_decoder_load is not None:
        dali = model_dir / "1" / layout.DALI_DEFINITION
        params = _preprocess_params(dali)
        params["hw_decoder_load"] = float(knobs.hw_decoder_load)
        triton_config.write_text_atomic(dali, with_definition_params(dali.read_text(), params))


def apply_config(repo: Path, cfg: Config) -> None:
    for model, knobs in cfg.items():
        apply_knobs(Path(repo) / model, knobs)


@dataclass(frozen=True)
class Axis:
    """One knob of one model and the values the search tries for it."""

    model: str
    knob: str
    values: tuple

    def set(self, cfg: Config, value) -> Config:
        out = dict(cfg)
        out[self.model] = replace(cfg[self.model], **{self.knob: value})
        return out


def axes(start: Config, instances: tuple[int, ...], delays_us: tuple[int, ...], threads: tuple[int, ...],
         hw_loads: tuple[float, ...]) -> list[Axis]:
    """The search axes for `start`: per model instances, delay, preferred sizes (its own list or
    none), and for gpu DALI models num_threads and hw_decoder_load. A start value missing from a
    list is added, so the default is always one of the values."""
    def values(given, current):
        return tuple(sorted(set(given) | {current}))

    out = []
    for model, k in start.items():
        out.append(Axis(model, "instances", values(instances, k.instances)))
        out.append(Axis(model, "delay_us", values(delays_us, k.delay_us)))
        if k.preferred:
            out.append(Axis(model, "preferred", (k.preferred, ())))
        if k.num_threads is not None:
            out.append(Axis(model, "num_threads", values(threads, k.num_threads)))
        if k.hw_decoder_load is not None:
            out.append(Axis(model, "hw_decoder_load", values(hw_loads, k.hw_decoder_load)))
    return out
