"""One setting of the width check: a model with LoRA trained with Adam on the fixed batch for a few steps, every step
measured (`lorakit.dynamics.measures`) in every LoRA layer. Its rows are plain dicts, one per step × layer."""

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from lorakit.dynamics.layers import InputCapture, lora_layers
from lorakit.dynamics.measures import layer_measures
from lorakit.widthcheck.arguments import LR_SCALINGS, WidthCheckArguments
from lorakit.widthcheck.models import Batch, base_model, with_lora


@dataclass(frozen=True)
class Setting:
    """One model to train: architecture, width, rank, init scheme, learning-rate scaling and seed."""

    arch: str
    width: int
    rank: int
    scheme: str
    lr_scaling: str
    seed: int

    def describe(self) -> dict:
        return {"arch": self.arch, "width": self.width, "rank": self.rank, "scheme": self.scheme,
                "lr_scaling": self.lr_scaling, "seed": self.seed}  # fmt: skip


def train_setting(base: torch.nn.Module, setting: Setting, args: WidthCheckArguments, batch: Batch) -> list[dict]:
    """Train a copy of the frozen `base` with LoRA under `setting` and return every step's rows."""
    scaling = args.scaling(setting.rank)
    model = with_lora(copy.deepcopy(base), setting.arch, setting.rank, scaling, setting.scheme, setting.seed)
    views = lora_layers(model)[None]
    lr = args.learning_rate(setting.width, setting.lr_scaling)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, eps=args.adam_eps)
    capture = InputCapture({None: views}, tokens=args.batch * args.tokens)
    initial = [view.factors() for view in views]
    rows = []
    model.train()
    for step in range(1, args.steps + 1):
        before = [view.factors() for view in views]
        capture.open()
        loss = model(**batch.inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        inputs = capture.close()
        head = {**setting.describe(), "lr": lr, "scaling": scaling, "step": step, "loss": loss.item()}
        for view, start, prior in zip(views, initial, before, strict=True):
            measured = layer_measures(inputs[(None, view.name)], scaling, start, prior, view.factors())
            rows.append({**head, "layer": view.name, "target": view.target, **measured})
    return rows


def width_settings(args: WidthCheckArguments) -> Iterator[tuple[tuple, list[Setting]]]:
    """The width check's settings, grouped by the frozen base they share (architecture, width, seed)."""
    for arch in args.archs:
        for width in args.widths:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                yield (
                    (arch, width, seed),
                    [
                        Setting(arch, width, args.rank, scheme, lr_scaling, seed)
                        for scheme in ("A", "B")
                        for lr_scaling in LR_SCALINGS
                    ],
                )


def rank_settings(args: WidthCheckArguments) -> Iterator[tuple[tuple, list[Setting]]]:
    """The rank sweep's settings at `rank_width` (one seed each), grouped by their shared base."""
    for arch in args.archs:
        seed = args.first_seed
        yield (
            (arch, args.rank_width, seed),
            [
                Setting(arch, args.rank_width, rank, scheme, lr_scaling, seed)
                for rank in args.ranks
                for scheme in ("A", "B")
                for lr_scaling in LR_SCALINGS
            ],
        )


def run_group(key: tuple, settings: list[Setting], args: WidthCheckArguments, batches: dict) -> list[dict]:
    """Every setting of one group, on one frozen base built once."""
    arch, width, seed = key
    batch = batches[arch]
    base = base_model(arch, width, args.layers, args.head_size, batch, seed)
    return [row for setting in settings for row in train_setting(base, setting, args, batch)]
