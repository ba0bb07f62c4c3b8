"""What a width check runs: the architectures and widths, the LoRA rank and α convention, the optimizer, the batch,
and the rank sweep. Every combination that cannot run is a one-line error before any model is built."""

from dataclasses import asdict, dataclass, field

from lorakit.core.errors import ConfigError
from lorakit.core.fields import POSITIVE, POSITIVE_INT, SEED, Range, check_fields, no_duplicates

ARCHITECTURES = ("bert", "llama")
CONVENTIONS = {  # α's convention → the LoRA scaling s it gives at rank r
    "alpha_over_r": "s = α/r (PEFT's default)",
    "alpha_over_sqrt_r": "s = α/√r (rsLoRA)",
    "fixed": "s = α at every rank",
}
LR_SCALINGS = {"n^-1/2": -0.5, "n^-1": -1.0}  # η = c · n^exponent
RUN_ONLY = ("output_dir", "resume", "tolerance")  # settings that change no measured number
NAMED = ("archs", "widths", "seeds", "first_seed", "rank_width", "rank_sweep")  # they pick groups, named by them
ONLY_FOR = {"width": ("ranks",), "rank": ("rank",)}  # settings that one kind of group does not depend on


@dataclass
class WidthCheckArguments:
    archs: list[str] = field(default_factory=lambda: list(ARCHITECTURES), metadata={"help": "bert and/or llama."})
    widths: list[int] = field(
        default_factory=lambda: [128, 256, 512, 1024, 2048], metadata={"help": "Model widths n, increasing."}
    )
    layers: int = field(default=2, metadata={"help": "Transformer blocks.", "rule": POSITIVE_INT})
    head_size: int = field(
        default=64, metadata={"help": "Attention head size (heads = n / head_size).", "rule": POSITIVE_INT}
    )
    rank: int = field(default=8, metadata={"help": "LoRA rank r of the width check.", "rule": POSITIVE_INT})
    alpha: float = field(default=8.0, metadata={"help": "LoRA α.", "rule": POSITIVE})
    convention: str = field(default="alpha_over_r", metadata={"help": f"α's convention: {', '.join(CONVENTIONS)}."})
    c: float = field(
        default=1e-3, metadata={"help": "Learning-rate constant: η = c·n^-1/2 or c·n^-1.", "rule": POSITIVE}
    )
    adam_eps: float = field(
        default=1e-12,
        metadata={"help": "Adam's ε (small: its steps stay sign-like at every width).", "rule": POSITIVE},
    )
    steps: int = field(
        default=40, metadata={"help": "Adam steps on the fixed batch.", "rule": Range(low=2, integer=True)}
    )
    seeds: int = field(
        default=2, metadata={"help": "Seeds (base weights and LoRA init) per setting.", "rule": POSITIVE_INT}
    )
    first_seed: int = field(default=0, metadata={"help": "The first seed.", "rule": SEED})
    batch: int = field(default=4, metadata={"help": "Sequences in the fixed batch.", "rule": POSITIVE_INT})
    tokens: int = field(
        default=16, metadata={"help": "Characters (tokens) per sequence.", "rule": Range(low=2, integer=True)}
    )
    text: str | None = field(
        default=None,
        metadata={"help": "A text file for the batch (default: the embedded movie reviews for bert, Shakespeare "
                  "for llama)."},
    )  # fmt: skip
    ranks: list[int] = field(
        default_factory=lambda: [2, 4, 8, 16, 32], metadata={"help": "Ranks of the rank sweep, increasing."}
    )
    rank_sweep: bool = field(default=True, metadata={"help": "Run the rank sweep (at rank_width, one seed)."})
    rank_width: int = field(default=256, metadata={"help": "The width of the rank sweep.", "rule": POSITIVE_INT})
    tolerance: float = field(
        default=0.2, metadata={"help": "A judged exponent passes within ± this.", "rule": POSITIVE}
    )
    output_dir: str = field(default="outputs/widthcheck", metadata={"help": "Where tables and figures go."})
    resume: bool = field(default=True, metadata={"help": "Keep the groups a killed run with equal settings finished."})

    def __post_init__(self) -> None:
        check_fields(self)
        no_duplicates("archs", self.archs)
        unknown = [a for a in self.archs if a not in ARCHITECTURES]
        if unknown or not self.archs:
            raise ConfigError(f"archs: choose from {', '.join(ARCHITECTURES)}, got {', '.join(unknown) or 'none'}")
        if self.convention not in CONVENTIONS:
            raise ConfigError(f"convention: choose from {', '.join(CONVENTIONS)}, got {self.convention!r}")
        check_widths(self.widths, self.head_size, "widths")
        if self.rank > self.widths[0]:
            raise ConfigError(f"rank: {self.rank} is larger than the smallest width {self.widths[0]}")
        if self.rank_sweep:
            check_increasing(self.ranks, "ranks")
            check_widths([self.rank_width], self.head_size, "rank_width")
            if self.ranks[-1] > self.rank_width:
                raise ConfigError(f"ranks: {self.ranks[-1]} is larger than the rank sweep's width {self.rank_width}")

    def settings(self, kind: str) -> dict:
        """What decides the numbers of a group of `kind` ("width" or "rank") beyond its name (architecture, width,
        seed): two runs may share a finished group iff these are equal."""
        left_out = (*RUN_ONLY, *NAMED, *ONLY_FOR[kind])
        return {k: v for k, v in asdict(self).items() if k not in left_out}

    def scaling(self, rank: int) -> float:
        """The LoRA scaling s at `rank` under the α convention."""
        return {"alpha_over_r": self.alpha / rank, "alpha_over_sqrt_r": self.alpha / rank**0.5, "fixed": self.alpha}[
            self.convention
        ]

    def learning_rate(self, width: int, lr_scaling: str) -> float:
        return self.c * width ** LR_SCALINGS[lr_scaling]


def check_increasing(values: list[int], name: str) -> None:
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ConfigError(f"{name}: must be positive integers, got {values}")
    if len(values) < 2 or any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ConfigError(f"{name}: give at least two, strictly increasing, got {values}")


def check_widths(widths: list[int], head_size: int, name: str) -> None:
    if name == "widths":
        check_increasing(widths, name)
    odd = [w for w in widths if w % head_size]
    if odd:
        raise ConfigError(f"{name}: {odd[0]} is not a multiple of head_size {head_size} (heads = width / head_size)")
