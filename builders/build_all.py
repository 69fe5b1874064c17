"""Build the Triton model repository described by a spec.

    python builders/build_all.py                       # the built-in demo (build.toml)
    python builders/build_all.py --spec my.toml --target cpu --precision fp32 --precision int8

Writes <output>/cpu/ and <output>/gpu/ (two Triton model repositories) and <output>/manifest.json.
Stages are cached under --cache-dir by a content hash of their inputs; --force reruns them.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from contract.spec import PRECISIONS, TARGETS, BuildSpec, SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = ROOT / "build.toml"
DEFAULT_CACHE = ROOT / ".cache" / "build"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="build_all.py",
        description="Build a Triton model repository (DALI preprocessing + ONNX Runtime / TensorRT "
                    "ensembles) from a declarative TOML spec.")
    p.add_argument("--spec", type=Path, default=DEFAULT_SPEC,
                   help="build spec (TOML); default: build.toml at the project root, the built-in demo")
    p.add_argument("--target", action="append", choices=TARGETS, dest="targets",
                   help="repository to write: 'cpu' (DALI CPU + ONNX Runtime) or 'gpu' (DALI GPU + "
                        "TensorRT); repeat for both; default: the spec's targets")
    p.add_argument("--precision", action="append", choices=PRECISIONS, dest="precisions",
                   help="build only these precisions (fp32 is always built: it is the reference); "
                        "repeatable; default: each model's precisions in the spec")
    p.add_argument("--model", action="append", dest="models", metavar="NAME",
                   help="build only the spec's model(s) of this name; repeatable; default: all")
    p.add_argument("--output", type=Path, help="repository folder; default: the spec's output")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                   help=f"stage cache and demo data (default: {DEFAULT_CACHE.relative_to(ROOT)})")
    p.add_argument("--force", action="store_true",
                   help="rerun every stage, ignoring cached results (calibration caches, keyed by "
                        "model, data and method, are still reused)")
    p.add_argument("--release", default=os.environ.get("TRITON_RELEASE") or None, metavar="YY.MM",
                   help="Triton release the gpu target is built for (contract/releases.py); plans need "
                        "its TensorRT; default: $TRITON_RELEASE, else the matrix's default")
    p.add_argument("--require-plans", action="store_true",
                   help="fail (exit 1) when TensorRT plans cannot be built here instead of skipping "
                        "them; the GPU build in docker compose passes it")
    p.add_argument("--trt-version-compatible", choices=("true", "false"),
                   help="build version-compatible plans (engine.version_compatible) for every model; "
                        "docker compose passes the same $TRT_VERSION_COMPATIBLE it gives Triton's "
                        "--backend-config, so the plans and the server setting always agree")
    p.add_argument("--engine-builder", choices=("python", "trtexec"),
                   help="how TensorRT plans are built (gpu target): the Python API or trtexec; "
                        "default: each model's engine.builder")
    p.add_argument("--allow-preprocess-mismatch", action="store_true",
                   help="build even when DALI's output is outside tolerance of the torchvision transform "
                        "(sets every model's input.parity = 'warn'; recorded in the manifest)")
    v = p.add_mutually_exclusive_group()
    v.add_argument("-v", "--verbose", action="store_true", help="log what each stage does")
    v.add_argument("-q", "--quiet", action="store_true", help="print errors and the summary only")
    return p.parse_args(argv)


def select(spec: BuildSpec, args: argparse.Namespace) -> BuildSpec:
    """Apply the command line's narrowing (targets, precisions, models, output) to the spec."""
    models = spec.models
    if args.models:
        unknown = sorted(set(args.models) - {m.name for m in models})
        if unknown:
            raise SpecError(f"--model {unknown[0]!r} is not in the spec; allowed: {[m.name for m in models]}")
        models = tuple(m for m in models if m.name in args.models)
    if args.precisions:
        wanted = set(args.precisions) | {"fp32"}
        models = tuple(m.model_copy(update={"precisions": tuple(p for p in PRECISIONS if p in wanted)})
                       for m in models)
    if args.engine_builder:
        models = tuple(m.model_copy(update={"engine": m.engine.model_copy(update={"builder": args.engine_builder})})
                       for m in models)
    if args.allow_preprocess_mismatch:
        models = tuple(m.model_copy(update={"input": m.input.model_copy(update={"parity": "warn"})}) for m in models)
    if args.trt_version_compatible:
        vc = args.trt_version_compatible == "true"
        models = tuple(m.model_copy(update={"engine": m.engine.model_copy(update={"version_compatible": vc})})
                       for m in models)
    update = {"models": models}
    if args.targets:
        update["targets"] = tuple(dict.fromkeys(args.targets))
    if args.output:
        update["output"] = args.output
    return spec.model_copy(update=update)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s")
    from builders.report import console

    try:
        spec = select(load_spec(args.spec), args)
    except SpecError as err:
        console.print(f"[red]spec error:[/red] {err}", highlight=False)
        return 2
    from builders.build import BuildError, build
    from contract.releases import UnknownRelease, release

    try:
        release(args.release)
    except UnknownRelease as err:
        console.print(f"[red]error:[/red] {err}", highlight=False)
        return 2

    start = time.perf_counter()
    try:
        result = build(spec, cache_dir=args.cache_dir, force=args.force, quiet=args.quiet,
                       release=args.release, require_plans=args.require_plans)
    except BuildError as err:
        if args.verbose and err.__cause__ is not None:
            import traceback

            traceback.print_exception(err.__cause__)
        console.print(f"[red]build failed:[/red] {err}", highlight=False)
        console.print(f"{spec.output} was left as it was.", highlight=False)
        return 1
    from builders.report import print_summary

    print_summary(result, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
