"""What the GPU check needs of the machine it runs on and records about it: the packages it imports (and which of
them travel as wheels), a working CUDA and bitsandbytes, the environment line, and the source it ran."""

import datetime
import hashlib
import importlib.metadata
import importlib.util
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ("torch", "transformers", "peft", "accelerate", "bitsandbytes")  # versions in the environment line
NEEDED = (*RECORDED, "pytest")  # the GPU plan's imports
CARRIED = ("bitsandbytes==0.50.2",)  # what the GPU machine's image lacks (its torch, transformers, … are its own)
CARRY_LIMIT = 64 * 2**20  # what travels with a device call, the working tree included
WHEEL_PLATFORMS = ("manylinux_2_28", "manylinux_2_27", "manylinux_2_24", "manylinux_2_17", "manylinux2014")
BNB_PROBE = (  # bitsandbytes loads its CUDA library and quantizes one tensor
    "import torch, bitsandbytes.functional as F; F.quantize_4bit(torch.randn(64, 64, device='cuda'), quant_type='nf4')"
)
SOURCE_PARTS = ("*.py", "*.sh", "*.yaml", "*.toml", "*.txt")


def missing_for_gpu() -> str | None:
    """Why the GPU plan cannot run here, in one line, or None."""
    for name in NEEDED:
        if importlib.util.find_spec(name) is None:
            carried = any(c.startswith(f"{name}==") for c in CARRIED)
            how = " (python -m benchmarks.gpu_check carry, then carry .whl)" if carried else ""
            return f"the package {name} is missing{how}"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (the CPU smoke run is --smoke)"
    try:  # in a process of its own, so this one never holds a CUDA context
        done = subprocess.run([sys.executable, "-c", BNB_PROBE], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "bitsandbytes did not quantize a test tensor within 120 s"
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"bitsandbytes cannot quantize on this GPU: {said}"
    return None


def gpu_name() -> str:
    if not shutil.which("nvidia-smi"):
        return "CPU"
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "unknown GPU (nvidia-smi timed out)"
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else "unknown GPU"


def source_digest() -> str:
    """A digest of the project's code and settings files as they are on disk: it names the source a run used even
    where no git history travelled."""
    digest = hashlib.sha1()
    files = {p for pattern in SOURCE_PARTS for p in ROOT.rglob(pattern) if p.is_file()}
    for path in sorted(p for p in files if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def environment(mode: str, budget_s: float, argv: list[str]) -> dict:
    """The results file's first line: where and with what the check ran."""
    versions = {}
    for name in RECORDED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    carried = ROOT / ".whl" / "SOURCE"
    return {
        "group": "environment", "mode": mode, "budget_s": budget_s, "gpu": gpu_name(),
        "python": platform.python_version(), "versions": versions, "source_digest": source_digest(),
        "carried_source": carried.read_text().strip() if carried.is_file() else None,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.gpu_check " + " ".join(argv),
    }  # fmt: skip


def tree_bytes() -> int:
    """The bytes of what a device call sends besides the carried folder: tracked and untracked, unignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True)  # fmt: skip
    files = [ROOT / name for name in listed.stdout.split("\0") if name]
    return sum(f.stat().st_size for f in files if f.is_file())


def carry(dest: Path) -> int:
    """Download the wheels the GPU machine lacks (for its Python 3.12 on x86-64) into `dest`, with the source they go
    with (git revision and `source_digest`), and check that they fit what a device call carries."""
    dest.mkdir(exist_ok=True)
    platforms = [flag for name in WHEEL_PLATFORMS for flag in ("--platform", f"{name}_x86_64")]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
    command += ["--implementation", "cp", *platforms, "-d", str(dest), *CARRIED]
    if subprocess.run(command).returncode != 0:
        print("gpu_check: error: pip download failed (see above)", file=sys.stderr)
        return 2
    described = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    (dest / "SOURCE").write_text(f"{described.stdout.strip() or 'unknown'} (digest {source_digest()})\n")
    size = sum(f.stat().st_size for f in dest.iterdir() if f.is_file()) + tree_bytes()
    print(f"{dest} and the working tree: {size / 2**20:.1f} MiB (a device call carries at most 64 MiB)")
    print("carry again after changing the code, so that the run's source digest matches the carried one")
    return 0 if size < CARRY_LIMIT else 2
