"""The width check (`python -m lorakit.widthcheck`): the fit recovers known exponents and judges them against the
theory, a reduced check on real architectures writes its tables and figures and resumes, the first steps obey the
inits' exact facts, and bad input is one line."""

import numpy as np
import pandas as pd
import pytest

from lorakit.widthcheck import fit
from lorakit.widthcheck.__main__ import main
from lorakit.widthcheck.arguments import WidthCheckArguments
from lorakit.widthcheck.models import base_model, make_batch
from lorakit.widthcheck.run import Setting, train_setting

TEXT = "the film was a quiet delight and the actors gave it all they had, " * 20
REDUCED = ["--widths", "64", "128", "--head_size", "32", "--layers", "1", "--seeds", "1", "--steps", "3"]
REDUCED += ["--ranks", "2", "4", "--rank_width", "64", "--rank", "4"]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    return path


def synthetic(exponents: dict, widths=(128, 256, 512, 1024), steps=3) -> pd.DataFrame:
    """Results whose quantity q of (scheme, lr scaling) is exactly width^exponents[...][q] · (1 + step/10), over two
    layers and two seeds (equal), for both architectures."""
    rows = []
    for (scheme, lr_scaling), powers in exponents.items():
        for arch in ("bert", "llama"):
            for width in widths:
                for step in range(1, steps + 1):
                    for seed in (0, 1):
                        for layer in ("l0", "l1"):
                            values = {q: width ** powers.get(q, 0.0) * (1 + step / 10) for q in fit.QUANTITIES}
                            rows.append({"arch": arch, "scheme": scheme, "lr_scaling": lr_scaling, "width": width,
                                         "step": step, "seed": seed, "layer": layer, **values})  # fmt: skip
    return pd.DataFrame(rows)


def theory() -> dict:
    powers = {}
    for p in fit.PREDICTIONS:
        powers.setdefault((p.scheme, p.lr_scaling), {})[p.quantity] = p.exponent
    return powers


def test_the_fit_recovers_exponents_and_judges_each_prediction():
    exact = fit.judge(fit.width_exponents(synthetic(theory())), tolerance=0.2)
    assert len(exact) == 2 * len(fit.PREDICTIONS)
    assert np.allclose(exact["measured"], exact["predicted"])
    assert set(exact["result"]) == {"pass", "reported (a limit)"}
    assert (exact["result"] == "pass").sum() == 2 * sum(p.judged for p in fit.PREDICTIONS)
    off = theory()
    off[("B", "n^-1")]["rms_z_b"] = 0.25  # just outside ±0.2
    off[("A", "n^-1/2")]["rms_update_x"] = 0.35  # inside
    judged = fit.judge(fit.width_exponents(synthetic(off)), tolerance=0.2).set_index(
        ["arch", "scheme", "lr", "quantity"]
    )
    assert judged.loc[("bert", "Init[B]", "∝ n^-1", "Z_B"), "result"] == "FAIL"
    assert judged.loc[("llama", "Init[A]", "∝ n^-1/2", "(A_t−A_0)·x"), "result"] == "pass"
    assert judged.loc[("llama", "Init[A]", "∝ n^-1/2", "(A_t−A_0)·x"), "measured"] == pytest.approx(0.35)


def test_a_quantity_that_is_zero_at_some_width_has_no_exponent_and_fails_where_judged():
    table = synthetic(theory())
    table.loc[(table["scheme"] == "B") & (table["width"] == 128), "rms_delta2"] = 0.0
    judged = fit.judge(fit.width_exponents(table), tolerance=0.2)
    rows = judged[(judged["scheme"] == "Init[B]") & (judged["quantity"] == "δ²")]
    assert rows["measured"].isna().all() and (rows["result"] == "FAIL").all()


def test_crossover_is_the_first_step_the_update_part_exceeds_a0_x():
    table = synthetic({("A", "n^-1/2"): {}})
    table["rms_a0_x"] = 1.0
    table["rms_update_x"] = table["step"] * table["width"] / 512  # width 512 overtakes at step 2 (1.0 at step 1)
    found = fit.crossover(table).set_index(["arch", "width"])
    assert found.loc[("bert", 1024), "overtakes at step"] == 1
    assert found.loc[("bert", 512), "overtakes at step"] == 2
    assert pd.isna(found.loc[("bert", 128), "overtakes at step"])
    assert found.loc[("bert", 128), "update / A_0·x at the last step"] == pytest.approx(3 * 128 / 512)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_the_first_steps_obey_each_inits_exact_facts(arch, text_file):
    args = WidthCheckArguments(widths=[64, 128], head_size=32, layers=1, steps=2, rank=4, text=str(text_file))
    batch = make_batch(arch, args.text, args.batch, args.tokens)
    base = base_model(arch, 64, args.layers, args.head_size, batch, seed=0)
    rows = {s: pd.DataFrame(train_setting(base, Setting(arch, 64, 4, s, "n^-1", 0), args, batch)) for s in "AB"}
    first_a, first_b = (rows[s][rows[s]["step"] == 1] for s in "AB")
    assert len(first_a) == 4 and (first_a["rms_a0_x"] > 0).all()
    assert (first_a[["rms_update_x", "rms_delta1", "rms_delta3"]] == 0).all().all()  # B = 0: A cannot move at step 1
    assert (first_a["rms_z_b"] > 0).all()  # B has moved, Z_B = s·B_1·A_0·x
    assert (first_b["rms_a0_x"] == 0).all() and (first_b[["rms_delta2", "rms_delta3"]] == 0).all().all()  # A_0 = 0
    assert np.allclose(first_b["rms_z_a"], first_b["rms_update_x"])
    assert rows["A"]["lr"].iloc[0] == pytest.approx(1e-3 / 64)


def test_a_reduced_check_writes_its_tables_and_figures_and_resumes(text_file, tmp_path, capsys):
    argv = [*REDUCED, "--text", str(text_file), "--output_dir", str(tmp_path / "out")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "judged within ±0.2" in out and "overtakes A_0·x" in out and "done in" in out
    folder = tmp_path / "out"
    judged = pd.read_csv(folder / "judged.csv")
    assert len(judged) == 2 * len(fit.PREDICTIONS)
    within = (judged["measured"] - judged["predicted"]).abs() <= 0.2
    assert (judged["result"] == within.map({True: "pass", False: "FAIL"})).sum() == 2 * sum(
        p.judged for p in fit.PREDICTIONS
    )
    exps = pd.read_csv(folder / "exponents.csv")
    assert set(exps["step"]) == {1, 2, 3} and (exps["layer"] == fit.LAYER_MEAN).sum() == 2 * 4 * 3
    assert len(pd.read_csv(folder / "crossover.csv")) == 2 * 2 * 2  # arch × lr scaling × width
    ranks = pd.read_csv(folder / "rank_exponents.csv")
    assert len(ranks) == 2 * 4 and ranks["rms_z_a"].notna().all()
    results = pd.read_csv(folder / "results.csv")
    assert set(results["rank"]) == {2, 4} and set(results["width"]) == {64, 128}
    assert all(
        (folder / f"{kind}_{arch}.png").stat().st_size > 10_000
        for kind in ("widthcheck", "rank")
        for arch in ("bert", "llama")
    )
    capsys.readouterr()
    first = results[results["group"] == results["group"].iloc[0]]
    first.to_csv(folder / "results.csv", index=False)  # as if killed after the first group
    assert main(argv) == 0
    assert "resuming: 1 groups already finished" in capsys.readouterr().out
    again = pd.read_csv(folder / "results.csv")
    assert again.equals(results)
    text_file.write_text(TEXT.replace("film", "play"))  # another batch: nothing of the earlier run is kept
    assert main(argv) == 0
    assert "resuming" not in capsys.readouterr().out
    assert not pd.read_csv(folder / "results.csv").equals(results)


def test_a_rerun_keeps_the_groups_it_shares_and_no_output_of_the_groups_it_drops(text_file, tmp_path, capsys):
    argv = [*REDUCED, "--text", str(text_file), "--output_dir", str(tmp_path)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--archs", "bert", "--rank_sweep", "false"]) == 0
    assert "resuming: 2 groups already finished" in capsys.readouterr().out  # bert at widths 64 and 128
    results = pd.read_csv(tmp_path / "results.csv")
    assert set(results["arch"]) == {"bert"} and set(results["group"].str.split().str[0]) == {"width"}
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["widthcheck_bert.png"]
    judged = pd.read_csv(tmp_path / "judged.csv")
    assert not (tmp_path / "rank_exponents.csv").exists() and set(judged["arch"]) == {"bert"}


@pytest.mark.parametrize(
    "argv, field",
    [
        (["--widths", "128", "64"], "widths"),
        (["--widths", "128"], "widths"),
        (["--widths", "64", "96"], "widths"),  # 96 is not a multiple of the head size 64
        (["--rank", "128", "--widths", "64", "128"], "rank"),
        (["--ranks", "8", "4"], "ranks"),
        (["--ranks", "4", "512"], "ranks"),
        (["--archs", "gpt2"], "archs"),
        (["--archs", "bert", "bert"], "archs"),
        (["--convention", "alpha"], "convention"),
        (["--steps", "1"], "steps"),
        (["--c", "0"], "c"),
        (["--text", "/nonexistent/text.txt"], "text"),
    ],
)
def test_bad_input_is_one_line(argv, field, capsys, tmp_path):
    assert main([*argv, "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err, err
