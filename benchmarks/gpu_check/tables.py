"""The GPU check's `results.jsonl` as the Markdown tables of docs/benchmarks.md: each target against the stock stack
of the same run, with the profile that says whether a step is launch-bound or compute-bound. Partial and odd results
(a step that failed, timed out or never started, a missing figure) are shown as such, never a crash."""

import json
import math
import re
from pathlib import Path

from benchmarks.targets import A10_GIB, PACK_TARGETS

GIB = 2**30
PACK = re.compile(r"pack(\d+)")


def read_results(path: Path) -> list[dict]:
    """The lines of a results file; a line cut short by a kill at the limit is left out."""
    lines = []
    for text in path.read_text(errors="replace").splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines


def step_lines(lines: list[dict], group: str) -> list[dict]:
    return [line for line in lines if line.get("group") == group and "status" in line]


def number(value) -> float | None:
    """A finite number, or None."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def rate_of(row: dict, rate: str) -> float | None:
    """A case's measured rate: from a finished case, or from one cut off at its timeout after its timed steps (its
    interim line); None for a case that failed, never ran or reported no positive rate."""
    if row.get("status") not in ("ok", "timeout"):
        return None
    value = number((row.get("result") or {}).get(rate))
    return value if value is not None and value > 0 else None


def bound(busy) -> str:
    """What a step's share of GPU-busy time says about it."""
    busy = number(busy)
    if busy is None:
        return "—"
    kind = "compute-bound" if busy >= 0.8 else "launch-bound" if busy < 0.5 else "partly launch-bound"
    return f"{busy:.0%} ({kind})"


def figure(value, digits: int = 2) -> str:
    value = number(value)
    return "—" if value is None else f"{value:,.{digits}f}"


def throughput_table(lines: list[dict], group: str, rate: str, unit: str) -> str:
    """One row per case of `group`: its rate against the stock case's, memory, step time and GPU busy share; failed,
    timed-out and skipped cases say so. Below the table, each target of `PACK_TARGETS` met or not."""
    rows = [r for r in step_lines(lines, group) if r["case"] != "prepare"]
    stock = next((rate_of(r, rate) for r in rows if r["case"] == "stock"), None)
    head = f"| case | {unit} | × stock | peak GiB (allocated / reserved) | step ms | GPU busy | kernels/step |"
    table = [head, "|---|---|---|---|---|---|---|"]
    for row in rows:
        value, result = rate_of(row, rate), row.get("result") or {}
        if value is None:
            table.append(f"| {row['case']} | {row['status']}: {row.get('reason', 'see log.txt')} | | | | | |")
            continue
        note = " (cut off while profiling)" if row["status"] == "timeout" else ""
        ratio = f"{value / stock:.2f}" if stock else "—"
        memory = f"{figure(result.get('peak_gib'))} / {figure(result.get('reserved_gib'))}"
        table.append(
            f"| {row['case']}{note} | {figure(value, 1)} | {ratio} | {memory} | {figure(result.get('step_ms'))} "
            f"| {bound(result.get('gpu_busy'))} | {figure(result.get('kernels_per_step'), 0)} |"
        )
    return "\n".join(table + [""] + verdicts(rows, group, rate, stock))


def verdicts(rows: list[dict], group: str, rate: str, stock: float | None) -> list[str]:
    """A line per target of `group`: met, missed by how much, or not measured."""
    found = {r["case"]: r for r in rows if rate_of(r, rate) is not None}
    lines = []
    for case, least, goal in PACK_TARGETS.get(group, []):
        aim = (
            f"≥ {least:g}× stock"
            + (f" (goal {goal:g}×)" if goal else "")
            + (f" within {A10_GIB} GiB" * (group == "qlora"))
        )
        if stock is None or case not in found:
            lines.append(f"- {case}: {aim}: not measured")
            continue
        ratio = rate_of(found[case], rate) / stock
        peak = number((found[case].get("result") or {}).get("peak_gib"))
        if group == "qlora" and peak is None:
            lines.append(f"- {case}: {aim}: {ratio:.2f}×, peak memory not measured")
            continue
        fits = group != "qlora" or peak <= A10_GIB
        verdict = "met" if ratio >= least and fits else "NOT MET"
        lines.append(f"- {case}: {aim}: **{verdict}** ({ratio:.2f}×{'' if fits else ', over the A10 budget'})")
    return lines


def probe_table(lines: list[dict]) -> str:
    """`--pack auto`'s line through the probe's peaks of 1 and 2, its predicted peak for each pack the run measured
    against that pack's measured peak (both the CUDA allocator's reservation), and the sizes it picks."""
    probe = next((r for r in step_lines(lines, "probe") if r["case"] == "packs" and r["status"] == "ok"), None)
    result = (probe or {}).get("result") or {}
    peaks = {int(k): v for k, v in (result.get("peaks") or {}).items() if number(v) is not None}
    if 1 not in peaks:
        return "The probe did not measure a pack of 1 (see the steps that did not finish)."
    said = f"Probe ({result.get('measured_by')}, {result.get('device_kind')}): pack of 1 {peaks[1] / GIB:.2f} GiB"
    said += f", pack of 2 {peaks[2] / GIB:.2f} GiB." if 2 in peaks else ", pack of 2 out of memory."
    per = peaks[2] - peaks[1] if 2 in peaks else None
    if per is None or per <= 0:
        return said + f" No line to extrapolate ({result.get('fit_error', 'no pack of 2')})."
    table = ["| pack | predicted GiB | measured reserved GiB (roberta step) |", "|---|---|---|"]
    for row in step_lines(lines, "roberta"):
        match = PACK.fullmatch(row["case"])
        if match and rate_of(row, "samples_per_s") is not None:
            k = int(match.group(1))
            measured = figure((row.get("result") or {}).get("reserved_gib"))
            table.append(f"| {k} | {(peaks[1] + (k - 1) * per) / GIB:.2f} | {measured} |")
    device = number(result.get("device_bytes"))
    sizes = f"{result.get('fits_a10')} within an A10's {A10_GIB} GiB"
    if device:
        sizes += f"; {result.get('fits_device')} within this device's {device / GIB:.0f} GiB"
    return "\n".join([said, "", *table, "", f"Pack sizes it picks: {sizes}."])


def tests_table(lines: list[dict]) -> str:
    tests = [line for line in lines if line.get("group") == "gpu_tests" and "outcome" in line]
    summary = next((line for line in step_lines(lines, "gpu_tests")), None)
    if summary is None:
        return "The gpu tests did not run."
    table = ["| test | outcome | s |", "|---|---|---|"]
    for test in tests:
        note = f": {test['message']}" if test["outcome"] != "passed" and test.get("message") else ""
        table.append(f"| {test['case']} | {test['outcome']}{note} | {figure(test.get('seconds'), 1)} |")
    counts = ", ".join(f"{n} {k}" for k, n in (summary.get("result") or {}).items() if n)
    reason = f" — {summary['reason']}" if summary.get("reason") else ""
    return "\n".join([f"pytest: {summary['status']}{reason} ({counts or 'nothing ran'})", "", *table])


def unfinished(lines: list[dict]) -> str:
    rows = [r for r in lines if "status" in r and r["status"] != "ok" and r.get("group") != "gpu_tests"]
    return "\n".join(f"- {r['group']}/{r['case']}: {r['status']} ({r.get('reason', 'see log.txt')})" for r in rows)


def provenance(env: dict) -> str:
    carried, digest = env.get("carried_source"), env.get("source_digest")
    if carried is None:
        return f"source digest {digest} (no carried source record)"
    same = f"digest {digest}" in carried
    return f"source {carried}" + ("" if same else f"; the run's own digest is {digest}: the tree changed since carry")


def document(lines: list[dict]) -> str:
    """The whole report: where and with what it ran, then one table per step group."""
    env = next((line for line in lines if line.get("group") == "environment"), {})
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
    sections = [
        f"`{env.get('command', 'python -m benchmarks.gpu_check run')}` ({env.get('mode', '?')} plan, budget "
        f"{env.get('budget_s', '?')} s), {env.get('date', '?')} on {env.get('gpu', '?')}; {provenance(env)}; "
        f"Python {env.get('python', '?')}, {versions}.",
        "### RoBERTa-large, samples/s of configurations trained\n\n"
        + throughput_table(lines, "roberta", "samples_per_s", "samples/s"),
        "### Llama-7b 4-bit QLoRA, tokens/s of configurations trained\n\n"
        + throughput_table(lines, "qlora", "tokens_per_s", "tokens/s"),
        "### gpu-marked tests\n\n" + tests_table(lines),
        "### `--pack auto`'s probe against the measured packs\n\n" + probe_table(lines),
    ]
    left = unfinished(lines)
    if left:
        sections.append("### Steps that did not finish\n\n" + left)
    return "\n\n".join(sections) + "\n"
