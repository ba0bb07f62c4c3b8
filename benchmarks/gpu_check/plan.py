"""What the GPU check runs, in priority order (issue 15), as a list of steps.

1. RoBERTa-large (random weights), sequence 128, batch 4 per configuration: the stock HF Trainer + PEFT, our single
   run, packs of 1 and 22 (`benchmarks.packed_glue`).
2. Llama-7b in 4-bit NF4, sequence 512, checkpointing: one stock QLoRA run at batch 1 and a pack of 8 at batch 1
   each (`benchmarks.packed_llm`), after saving a random checkpoint to load.
3. The `gpu`-marked tests (`tests/test_gpu.py`).
4. `--pack auto`'s probe (`packing.probe`) on a pack of the step-1 setting, to set its prediction beside step 1's
   measured peaks.
5. If time remains: packs of 4 and 11, then our single run and the pack of 22 under `torch.compile`.

The smoke plan is the same list on tiny architectures on a CPU (no compile cases), so the script is exercised by the
test suite while no GPU is lent.
"""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Step:
    group: str  # what it measures: roberta, qlora, gpu_tests, probe
    case: str  # which case of the group
    argv: tuple[str, ...]  # arguments to `python`
    timeout_s: float  # its own limit; the whole run's budget may cut it shorter
    needs: tuple[str, ...] = ()  # names of steps that must have succeeded first
    reads: str = "json"  # its result: the last JSON line of its stdout, or "junit" (pytest's report)

    @property
    def name(self) -> str:
        return f"{self.group}/{self.case}"


@dataclass(frozen=True)
class Scale:
    """The sizes of one plan."""

    device: str
    encoder: str  # benchmarks.packed_glue's --arch
    packs: tuple[int, ...]  # pack sizes measured first; the largest is the headline pack
    extra_packs: tuple[int, ...]  # measured if time remains
    seq: int
    batch: int
    steps: int
    warmup: int
    compile: bool  # the compiled cases, if time remains
    decoder: str  # benchmarks.packed_llm's --arch
    quantization: str
    decoder_pack: int
    decoder_seq: int
    decoder_steps: int
    decoder_warmup: int
    budget_s: float  # the whole run


GPU = Scale(
    device="cuda", encoder="roberta-large", packs=(1, 22), extra_packs=(4, 11), seq=128, batch=4, steps=20, warmup=5,
    compile=True, decoder="llama-7b", quantization="4bit", decoder_pack=8, decoder_seq=512, decoder_steps=12,
    decoder_warmup=3, budget_s=290,
)  # fmt: skip
SMOKE = Scale(
    device="cpu", encoder="tiny", packs=(1, 2), extra_packs=(), seq=32, batch=2, steps=3, warmup=1, compile=False,
    decoder="tiny", quantization="none", decoder_pack=2, decoder_seq=64, decoder_steps=3, decoder_warmup=1,
    budget_s=900,
)  # fmt: skip


def encoder_case(scale: Scale, case: str, compiled: bool = False) -> Step:
    argv = ["-m", "benchmarks.packed_glue", "--one", case, "--arch", scale.encoder, "--device", scale.device]
    argv += ["--seq", str(scale.seq), "--batch", str(scale.batch), "--steps", str(scale.steps)]
    argv += ["--warmup", str(scale.warmup), *(["--compile"] if compiled else [])]
    timeout = (150 if compiled else 60) + (15 if case == "stock" else 0)  # the first case also warms the disk cache
    return Step("roberta", case + ("_compile" if compiled else ""), tuple(argv), timeout)


def decoder_steps(scale: Scale, work: Path) -> list[Step]:
    folder = str(work / scale.decoder)
    prepare = ["-m", "benchmarks.gpu_check", "prepare-decoder", "--arch", scale.decoder, "--folder", folder]
    steps = [Step("qlora", "prepare", tuple(prepare), 120)]
    for case in ("stock", f"pack{scale.decoder_pack}"):
        argv = ["-m", "benchmarks.packed_llm", "--one", case, "--path", folder, "--arch", scale.decoder]
        argv += ["--device", scale.device, "--quantization", scale.quantization, "--seq", str(scale.decoder_seq)]
        argv += ["--steps", str(scale.decoder_steps), "--warmup", str(scale.decoder_warmup)]
        steps.append(Step("qlora", case, tuple(argv), 100, needs=("qlora/prepare",)))
    return steps


def tests_step(out: Path) -> Step:
    argv = ["-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    return Step("gpu_tests", "pytest", (*argv, "--junitxml", str(out / "gpu_tests.xml")), 120, reads="junit")


def probe_steps(scale: Scale, work: Path) -> list[Step]:
    folder = str(work / f"{scale.encoder}-probe")
    prepare = ["-m", "benchmarks.gpu_check", "prepare-encoder", "--arch", scale.encoder, "--folder", folder]
    prepare += ["--seq", str(scale.seq), "--batch", str(scale.batch)]
    steps = [Step("probe", "prepare", tuple(prepare), 60)]
    for k in (1, 2):
        argv = ("-m", "packing.probe", f"{folder}/pack.json", str(k))
        steps.append(Step("probe", f"k{k}", argv, 75, needs=("probe/prepare",)))
    return steps


def plan(scale: Scale, work: Path, out: Path) -> list[Step]:
    """Every step of a run at `scale`, in the order they run; checkpoints go to `work`, reports to `out`."""
    first = [encoder_case(scale, case) for case in ("stock", "ours", *(f"pack{k}" for k in scale.packs))]
    extra = [encoder_case(scale, f"pack{k}") for k in scale.extra_packs]
    if scale.compile:
        extra += [encoder_case(scale, "ours", True), encoder_case(scale, f"pack{max(scale.packs)}", True)]
    return [*first, *decoder_steps(scale, work), tests_step(out), *probe_steps(scale, work), *extra]
