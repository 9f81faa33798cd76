"""Verify the DVC cache and the workspace against their recorded hashes; exit 1 on any mismatch.

    python scripts/verify_cache.py            # from the project folder
    python scripts/verify_cache.py --no-workspace

DVC trusts its cache: an object is named by the md5 of its content and never re-read to check that. With the
hardlink cache (.dvc/config) an output in the workspace *is* the cache object, so editing it in place (as root,
or after a chmod) silently corrupts the cache entry, and `dvc push` would upload the damage. This re-hashes:
- every cache object against its name (files and `.dir` manifests);
- every output recorded in dvc.lock against its recorded md5 (file by file for folders).
Standard library plus PyYAML only: it runs without the package and without importing DVC.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

CHUNK = 1 << 20


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # DVC's content address, not a security measure
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def dir_manifest_md5(entries: list[dict[str, str]]) -> str:
    """DVC 3's hash of a folder: md5 of its sorted manifest in DVC's JSON form, plus `.dir`."""
    ordered = sorted(entries, key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(ordered, sort_keys=True).encode(), usedforsecurity=False).hexdigest() + ".dir"


def cache_path(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def verify_cache(cache: Path) -> list[str]:
    """Objects whose content does not hash to their name."""
    problems = []
    root = cache / "files" / "md5"
    for path in sorted(root.rglob("*")) if root.is_dir() else []:
        if not path.is_file() or path.name.endswith((".tmp", ".lock")):
            continue
        expected = path.parent.name + path.name.removesuffix(".dir")
        actual = md5_file(path)
        if actual != expected:
            problems.append(
                f"{path}: cache object does not hash to its name (content md5 {actual}); remove it, then "
                "`dvc pull` (or `dvc repro` the stage that makes it) to get the recorded version back"
            )
    return problems


def workspace_outs(lock: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(stage, path, md5) of every output dvc.lock records."""
    outs = []
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs") or []:
            if out.get("md5"):
                outs.append((stage, out["path"], out["md5"]))
    return outs


def verify_out(project: Path, cache: Path, stage: str, rel: str, md5: str) -> list[str]:
    path = project / rel
    fix = f"`dvc checkout {rel}` restores the recorded version (if its cache entry is intact), `dvc repro {stage}` " \
          f"rebuilds it, `dvc commit {stage}` records an intended change"  # fmt: skip
    if not path.exists():
        return [f"{rel}: missing (stage {stage}); {fix}"]
    if not md5.endswith(".dir"):
        actual = md5_file(path) if path.is_file() else "a folder"
        return [] if actual == md5 else [f"{rel}: differs from dvc.lock (stage {stage}: {md5}, found {actual}); {fix}"]
    files = {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*")) if p.is_file()}
    found = {name: md5_file(p) for name, p in files.items()}
    manifest = cache_path(cache, md5)
    if manifest.is_file():  # name each differing file
        recorded = {e["relpath"]: e["md5"] for e in json.loads(manifest.read_text(encoding="utf-8"))}
        differ = sorted(n for n in recorded.keys() | found.keys() if recorded.get(n) != found.get(n))
        return [f"{rel}/{n}: differs from dvc.lock (stage {stage}); {fix}" for n in differ]
    actual = dir_manifest_md5([{"md5": h, "relpath": n} for n, h in found.items()])
    return [] if actual == md5 else [f"{rel}: differs from dvc.lock (stage {stage}: {md5}, found {actual}); {fix}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."), help="the project folder (default: .)")
    parser.add_argument("--cache", type=Path, help="the DVC cache (default: <project>/.dvc/cache)")
    parser.add_argument("--no-workspace", action="store_true", help="check the cache only")
    args = parser.parse_args(argv)
    project, cache = args.project, args.cache or args.project / ".dvc" / "cache"
    problems = verify_cache(cache)
    outs: list[tuple[str, str, str]] = []
    if not args.no_workspace:
        lock_file = project / "dvc.lock"
        lock = yaml.safe_load(lock_file.read_text(encoding="utf-8")) if lock_file.is_file() else {}
        outs = workspace_outs(lock or {})
        for stage, rel, md5 in outs:
            problems += verify_out(project, cache, stage, rel, md5)
    for problem in problems:
        print(f"verify_cache: {problem}", file=sys.stderr)
    objects = sum(1 for p in (cache / "files" / "md5").rglob("*") if p.is_file()) if cache.is_dir() else 0
    status = f"{len(problems)} problem(s)" if problems else "all match"
    print(f"verify_cache: {objects} cache objects and {len(outs)} recorded outputs checked: {status}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
