"""Writing the winner back into the user's repository: the configs it replaces are kept in a
backup folder beside the target (not inside it, where Triton would take a folder for a model),
the winner's copies next to them, and the manifest records which set is live."""
from __future__ import annotations

import difflib
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from contract import layout
from contract.manifest import LiveConfig, manifest_file, record_live_config
from benchmarks.config_search.space import Config, apply_config

BACKUP_DIR = "config_search"   # <manifest folder>/config_search/<target>-<UTC stamp>/{previous,live}/


def _config_files(model_dir: Path) -> list[Path]:
    """The files a candidate changes, relative to the model folder."""
    rel = [Path("config.pbtxt")]
    if (model_dir / "1" / layout.DALI_DEFINITION).is_file():
        rel.append(Path("1") / layout.DALI_DEFINITION)
    return rel


def _copy_configs(repo: Path, models: list[str], dest: Path) -> None:
    for m in models:
        for rel in _config_files(repo / m):
            (dest / m / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / m / rel, dest / m / rel)


def diff(repo: Path, winner: Config) -> str:
    """The unified diff the write-back would make, computed on a private copy (for --dry-run)."""
    out = []
    with tempfile.TemporaryDirectory(prefix="config-search-diff-") as tmp:
        _copy_configs(repo, list(winner), Path(tmp))
        apply_config(Path(tmp), winner)
        for m in winner:
            for rel in _config_files(repo / m):
                a, b = (repo / m / rel).read_text(), (Path(tmp) / m / rel).read_text()
                out += difflib.unified_diff(a.splitlines(True), b.splitlines(True), f"a/{m}/{rel}", f"b/{m}/{rel}")
    return "".join(out) or "(no change: the winner is the configuration already in the repository)\n"


def write_back(repo: Path, ensemble: str, winner: Config) -> dict:
    """Back up the current configs of `winner`'s models, write the winner into `repo`, keep a copy
    of what was written, and record it in the manifest when `repo`'s parent folder has one.
    Returns where everything went (paths relative to that parent folder)."""
    repo = Path(repo).resolve()
    top, target = repo.parent, repo.name
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest = top / BACKUP_DIR / f"{target}-{stamp}"
    if dest.exists():
        raise FileExistsError(f"{dest} exists already (two write-backs within a second?)")
    models = list(winner)
    _copy_configs(repo, models, dest / "previous")
    apply_config(repo, winner)
    _copy_configs(repo, models, dest / "live")
    live = LiveConfig(target=target, ensemble=ensemble, models=tuple(models),
                      live=(dest / "live").relative_to(top).as_posix(),
                      previous=(dest / "previous").relative_to(top).as_posix(),
                      written=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    manifest = None
    if manifest_file(top).is_file():
        manifest = str(record_live_config(top, live).relative_to(top))
    return {**live.__dict__, "models": models, "folder": str(top), "manifest": manifest}
