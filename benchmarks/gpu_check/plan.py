"""What the GPU check runs, in priority order (issue 15), as a list of steps.

1. RoBERTa-large (random weights), sequence 128, batch 4 per configuration, bf16 autocast (TF32 for every case):
   the stock HF Trainer + PEFT, our single run, packs of 1 and 22 (`benchmarks.packed_glue`).
2. Llama-7b in 4-bit NF4, sequence 512, checkpointing: one stock QLoRA run at batch 1 and a pack of 8 at batch 1
   each (`benchmarks.packed_llm`), after saving a random checkpoint to load.
3. The `gpu`-marked tests (`tests/test_gpu.py`).
4. `--pack auto`'s probe of a pack in step 1's setting, as the sweep tool runs it, to set its prediction beside
   step 1's measured peaks.
5. If time remains: packs of 4 and 11, then our single run and the pack of 22 under `torch.compile`. Within the
   default budget these seldom start; `--only roberta` in a second call (or a larger `--budget`) runs them.

Every step has a timeout and the time it needs at least (`min_s`): a step is not started with less of the budget
left. The smoke plan is the same list on tiny architectures on a CPU (no compile cases, one profiled step), so the
script is exercised by the test suite while no GPU is lent.
"""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Step:
    group: str  # what it measures: roberta, qlora, gpu_tests, probe
    case: str  # which case of the group
    argv: tuple[str, ...]  # arguments to `python`
    timeout_s: float  # its own limit; the whole run's budget may cut it shorter
    min_s: float = 15  # not started with less of the budget left
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
    precision: str  # of every encoder case and the probe's pack
    compile: bool  # the compiled cases, if time remains
    decoder: str  # benchmarks.packed_llm's --arch
    quantization: str
    decoder_pack: int
    decoder_seq: int
    decoder_steps: int
    decoder_warmup: int
    profile_steps: int  # after the timed steps of every throughput case
    budget_s: float  # the whole run


GPU = Scale(
    device="cuda", encoder="roberta-large", packs=(1, 22), extra_packs=(4, 11), seq=128, batch=4, steps=20, warmup=5,
    precision="bf16", compile=True, decoder="llama-7b", quantization="4bit", decoder_pack=8, decoder_seq=512,
    decoder_steps=12, decoder_warmup=3, profile_steps=3, budget_s=290,
)  # fmt: skip
SMOKE = Scale(
    device="cpu", encoder="tiny", packs=(1, 2), extra_packs=(), seq=32, batch=2, steps=3, warmup=1, precision="fp32",
    compile=False, decoder="tiny", quantization="none", decoder_pack=2, decoder_seq=64, decoder_steps=3,
    decoder_warmup=1, profile_steps=1, budget_s=900,
)  # fmt: skip


def encoder_case(scale: Scale, case: str, compiled: bool = False) -> Step:
    argv = ["-m", "benchmarks.packed_glue", "--one", case, "--arch", scale.encoder, "--device", scale.device]
    argv += ["--seq", str(scale.seq), "--batch", str(scale.batch), "--steps", str(scale.steps)]
    argv += ["--warmup", str(scale.warmup), "--precision", scale.precision]
    argv += ["--profile_steps", str(scale.profile_steps), *(["--compile"] if compiled else [])]
    name = case + ("_compile" if compiled else "")
    return Step("roberta", name, tuple(argv), timeout_s=150 if compiled else 60, min_s=90 if compiled else 20)


def decoder_steps(scale: Scale, work: Path) -> list[Step]:
    folder = str(work / scale.decoder)
    prepare = ["-m", "benchmarks.gpu_check", "prepare-decoder", "--arch", scale.decoder, "--folder", folder]
    steps = [Step("qlora", "prepare", tuple(prepare), timeout_s=120, min_s=30)]
    for case in ("stock", f"pack{scale.decoder_pack}"):
        argv = ["-m", "benchmarks.packed_llm", "--one", case, "--path", folder, "--arch", scale.decoder]
        argv += ["--device", scale.device, "--quantization", scale.quantization, "--seq", str(scale.decoder_seq)]
        argv += ["--steps", str(scale.decoder_steps), "--warmup", str(scale.decoder_warmup)]
        argv += ["--profile_steps", str(scale.profile_steps)]
        steps.append(Step("qlora", case, tuple(argv), timeout_s=110, min_s=40, needs=("qlora/prepare",)))
    return steps


def tests_step(out: Path) -> Step:
    argv = [
        "-m",
        "pytest",
        "-o",
        "addopts=",
        "-m",
        "gpu",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_gpu.py",
    ]  # no xdist there
    argv += ["--junitxml", str(out / "gpu_tests.xml")]
    return Step(
        "gpu_tests", "pytest", tuple(argv), timeout_s=240, min_s=30, reads="junit"
    )  # an FSDP launch among them


def probe_steps(scale: Scale, work: Path) -> list[Step]:
    folder = str(work / f"{scale.encoder}-probe")
    prepare = ["-m", "benchmarks.gpu_check", "prepare-encoder", "--arch", scale.encoder, "--folder", folder]
    prepare += ["--seq", str(scale.seq), "--batch", str(scale.batch), "--precision", scale.precision]
    gpu = "0" if scale.device == "cuda" else "none"
    measure = ("-m", "benchmarks.gpu_check", "probe-pack", f"{folder}/pack.json", "--gpu", gpu)
    return [
        Step("probe", "prepare", tuple(prepare), timeout_s=60, min_s=15),
        Step("probe", "packs", measure, timeout_s=110, min_s=30, needs=("probe/prepare",)),
    ]


def plan(scale: Scale, work: Path, out: Path) -> list[Step]:
    """Every step of a run at `scale`, in the order they run; checkpoints go to `work`, reports to `out`."""
    first = [encoder_case(scale, case) for case in ("stock", "ours", *(f"pack{k}" for k in scale.packs))]
    extra = [encoder_case(scale, f"pack{k}") for k in scale.extra_packs]
    if scale.compile:
        extra += [encoder_case(scale, "ours", True), encoder_case(scale, f"pack{max(scale.packs)}", True)]
    return [*first, *decoder_steps(scale, work), tests_step(out), *probe_steps(scale, work), *extra]


def select(steps: list[Step], only: list[str] | None) -> list[Step]:
    """The steps named by group or group/case in `only` (all of them when None), with the steps they need."""
    if not only:
        return steps
    chosen = {s.name for s in steps if s.group in only or s.name in only}
    chosen |= {need for s in steps if s.name in chosen for need in s.needs}
    return [s for s in steps if s.name in chosen]
