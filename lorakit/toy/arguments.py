"""Command-line settings of the toy experiment, with the checks that turn bad input into one-line errors.

Which defaults are the paper's and which are ours (the paper's d, r, step count and lr grid could not be read):
  paper — widths 128 … 8192, 100 test points, Adam (β = 0.9, 0.999) full batch, MSE, ReLU, A ~ N(0, 1/n) or
          B ~ N(0, 1/r) with the other factor zero, 3 seeds;
  ours  — d = 5, r = 4, α = r, 256 training points (the paper: 1000), 200 steps, lrs 10^-4.5 … 1 at 4 per decade
          (19 values), unstable above 100 × the initial loss.
"""

from dataclasses import asdict, dataclass, field

import numpy as np

from lorakit.core.errors import ConfigError
from lorakit.core.fields import POSITIVE, POSITIVE_INT, SEED, Range, check_fields, no_duplicates
from lorakit.toy.model import INITS, ToyConfig

DEFAULT_WIDTHS = [128, 256, 512, 1024, 2048, 4096, 8192]
RUN_ONLY = ("output_dir", "resume", "figures", "widths")  # settings that do not change any single width's numbers


@dataclass
class ToyArguments:
    widths: list[int] = field(
        default_factory=lambda: list(DEFAULT_WIDTHS), metadata={"help": "Hidden widths n.", "rule": POSITIVE_INT}
    )
    lrs: list[float] = field(
        default_factory=list, metadata={"help": "Explicit lr grid (overrides lr_min/max).", "rule": POSITIVE}
    )
    lr_min: float = field(default=10**-4.5, metadata={"help": "Smallest lr of the log-spaced grid.", "rule": POSITIVE})
    lr_max: float = field(default=1.0, metadata={"help": "Largest lr of the log-spaced grid.", "rule": POSITIVE})
    lrs_per_decade: int = field(
        default=4, metadata={"help": "Grid density: lrs spaced by 10^(1/this).", "rule": POSITIVE_INT}
    )
    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds (teacher, data, init).", "rule": SEED}
    )
    inits: list[str] = field(default_factory=lambda: list(INITS), metadata={"help": "Init schemes: A and/or B."})
    steps: int = field(default=200, metadata={"help": "Full-batch Adam steps.", "rule": POSITIVE_INT})
    input_dim: int = field(default=5, metadata={"help": "Input dimension d.", "rule": POSITIVE_INT})
    rank: int = field(default=4, metadata={"help": "LoRA rank r.", "rule": POSITIVE_INT})
    alpha: float = field(default=4.0, metadata={"help": "LoRA alpha (update scaled by alpha / r).", "rule": POSITIVE})
    n_train: int = field(
        default=256, metadata={"help": "Training points (the paper used 1000).", "rule": POSITIVE_INT}
    )
    n_test: int = field(default=100, metadata={"help": "Test points.", "rule": POSITIVE_INT})
    loraplus_ratio: float = field(default=1.0, metadata={"help": "LoRA+: lr_B = ratio · lr_A.", "rule": POSITIVE})
    init_scale_a: float = field(default=1.0, metadata={"help": "Init[A]: A ~ N(0, scale²/n).", "rule": POSITIVE})
    init_scale_b: float = field(default=1.0, metadata={"help": "Init[B]: B ~ N(0, scale²/r).", "rule": POSITIVE})
    divergence_factor: float = field(
        default=100.0,
        metadata={"help": "Unstable once loss > this × initial loss.", "rule": Range(low=1, low_open=True)},
    )
    compute_dtype: str = field(default="float32", metadata={"help": "dtype of the n×N activations (float32|64)."})
    output_dir: str | None = field(default=None, metadata={"help": "Default: outputs/toy/ratio<r>_steps<s>."})
    resume: bool = field(default=True, metadata={"help": "Keep widths a killed run with equal settings finished."})
    figures: bool = field(default=True, metadata={"help": "Draw the three PNG figures."})

    def toy_config(self) -> ToyConfig:
        try:
            return ToyConfig(
                d=self.input_dim, r=self.rank, alpha=self.alpha, n_train=self.n_train, n_test=self.n_test,
                steps=self.steps, init_scale_a=self.init_scale_a, init_scale_b=self.init_scale_b,
                loraplus_ratio=self.loraplus_ratio, divergence_factor=self.divergence_factor,
                compute_dtype=self.compute_dtype,
            )  # fmt: skip
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def learning_rates(self) -> list[float]:
        if self.lrs:
            return sorted(set(self.lrs))
        decades = np.log10(self.lr_max) - np.log10(self.lr_min)
        count = int(np.floor(decades * self.lrs_per_decade + 1e-9)) + 1
        return [float(v) for v in 10 ** (np.log10(self.lr_min) + np.arange(count) / self.lrs_per_decade)]

    def validate(self) -> None:
        """Raise ConfigError (one line, naming the field) on settings that cannot run."""
        check_fields(self)
        if self.output_dir is not None and not self.output_dir.strip():
            raise ConfigError("output_dir: must name a folder, got an empty string")
        for name in ("widths", "lrs", "seeds", "inits"):
            no_duplicates(name, getattr(self, name))
        if not self.widths:
            raise ConfigError("widths: give at least one width")
        if self.rank > min(self.widths):
            raise ConfigError(f"rank: {self.rank} is larger than the smallest width {min(self.widths)}")
        unknown = [i for i in self.inits if i not in INITS]
        if unknown or not self.inits:
            raise ConfigError(f"inits: unknown init {unknown or self.inits} (known: {', '.join(INITS)})")
        if not self.seeds:
            raise ConfigError("seeds: give at least one seed")
        if not self.lrs and not self.lr_min <= self.lr_max:
            raise ConfigError(
                f"lr_min, lr_max: the grid is empty (need 0 < lr_min ≤ lr_max and lrs_per_decade > 0, "
                f"got {self.lr_min}, {self.lr_max}, {self.lrs_per_decade})"
            )
        self.toy_config()

    def default_output_dir(self) -> str:
        return f"outputs/toy/ratio{self.loraplus_ratio:g}_steps{self.steps}"

    def settings(self) -> dict:
        """Everything that decides a width's numbers: two runs may share finished widths iff these are equal."""
        return {k: v for k, v in asdict(self).items() if k not in RUN_ONLY}
