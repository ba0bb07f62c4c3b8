"""The GPU check's `results.jsonl` as the Markdown tables of docs/benchmarks.md: each target against the stock stack
of the same run, with the profile that says whether a step is launch-bound or compute-bound."""

import json
import math
from pathlib import Path

GIB = 2**30
A10_GIB = 22.5  # what an A10's 24 GB leave to tensors
TARGETS = {  # issue 15: (case, × stock at least, goal)
    "roberta": [("pack22", 15.0, 30.0), ("ours", 1.5, None)],
    "qlora": [("pack8", 4.0, 6.0)],
}


def read_results(path: Path) -> list[dict]:
    """The lines of a results file; a line cut short by a kill at the limit is left out."""
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return lines


def step_lines(lines: list[dict], group: str) -> list[dict]:
    return [line for line in lines if line.get("group") == group and "status" in line]


def bound(busy: float | None) -> str:
    """What a step's share of GPU-busy time says about it."""
    if busy is None or (isinstance(busy, float) and math.isnan(busy)):
        return "—"
    kind = "compute-bound" if busy >= 0.8 else "launch-bound" if busy < 0.5 else "partly launch-bound"
    return f"{busy:.0%} ({kind})"


def figure(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def throughput_table(lines: list[dict], group: str, rate: str, unit: str) -> str:
    """One row per case of `group`: its rate against the stock case's, memory, step time and GPU busy share; failed,
    timed-out and skipped cases say so. Below the table, each target of `TARGETS` met or not."""
    rows = step_lines(lines, group)
    stock = next((r["result"][rate] for r in rows if r["case"] == "stock" and "result" in r), None)
    head = f"| case | {unit} | × stock | peak GiB (allocated / reserved) | step ms | GPU busy | kernels/step |"
    table = [head, "|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["case"] == "prepare":
            continue
        result = row.get("result") or {}
        if row["status"] != "ok" or rate not in result:
            table.append(f"| {row['case']} | {row['status']}: {row.get('reason', 'see log.txt')} | | | | | |")
            continue
        ratio = f"{result[rate] / stock:.2f}" if stock else "—"
        memory = f"{figure(result.get('peak_gib'))} / {figure(result.get('reserved_gib'))}"
        table.append(
            f"| {row['case']} | {figure(result[rate], 1)} | {ratio} | {memory} | {figure(result.get('step_ms'))} "
            f"| {bound(result.get('gpu_busy'))} | {figure(result.get('kernels_per_step'))} |"
        )
    return "\n".join(table + [""] + verdicts(rows, group, rate, stock))


def verdicts(rows: list[dict], group: str, rate: str, stock: float | None) -> list[str]:
    """A line per target of `group`: met, missed by how much, or not measured."""
    found = {r["case"]: r.get("result") or {} for r in rows if r["status"] == "ok"}
    lines = []
    for case, least, goal in TARGETS.get(group, []):
        aim = f"≥ {least:g}× stock" + (f" (goal {goal:g}×)" if goal else "")
        if group == "qlora":
            aim += f" within {A10_GIB} GiB"
        if stock is None or rate not in found.get(case, {}):
            lines.append(f"- {case}: {aim}: not measured")
            continue
        ratio = found[case][rate] / stock
        fits = group != "qlora" or found[case].get("peak_gib", math.inf) <= A10_GIB
        verdict = "met" if ratio >= least and fits else "NOT MET"
        lines.append(f"- {case}: {aim}: **{verdict}** ({ratio:.2f}×{'' if fits else ', over the A10 budget'})")
    return lines


def probe_table(lines: list[dict]) -> str:
    """`--pack auto`'s line through the probe's peaks of 1 and 2, its predicted peak for each pack the run measured
    against that pack's measured peak (both the CUDA allocator's reservation), and the sizes it picks."""
    from packing.probe import fit

    probes = {r["case"]: r.get("result") or {} for r in step_lines(lines, "probe") if r["status"] == "ok"}
    if not {"k1", "k2"} <= set(probes) or probes["k1"].get("peak_bytes") is None:
        return "The probe did not measure packs of 1 and 2 (see the steps that did not finish)."
    peaks = {1: probes["k1"]["peak_bytes"]}
    if probes["k2"].get("peak_bytes") is not None:
        peaks[2] = probes["k2"]["peak_bytes"]
    per = peaks[2] - peaks[1] if 2 in peaks else None
    out = [f"Probe ({probes['k1'].get('measured_by')}): pack of 1 {peaks[1] / GIB:.2f} GiB"]
    out[0] += f", pack of 2 {peaks[2] / GIB:.2f} GiB." if 2 in peaks else ", pack of 2 out of memory."
    if per is not None and per > 0:
        table = ["| pack | predicted GiB | measured reserved GiB (roberta step) |", "|---|---|---|"]
        measured = {
            r["case"]: r["result"].get("reserved_gib")
            for r in step_lines(lines, "roberta")
            if r["status"] == "ok" and r["case"].startswith("pack") and "result" in r
        }
        for case in sorted(measured, key=lambda c: int(c.removeprefix("pack"))):
            k = int(case.removeprefix("pack"))
            table.append(f"| {k} | {(peaks[1] + (k - 1) * per) / GIB:.2f} | {figure(measured[case])} |")
        device = probes["k1"].get("device_bytes")
        sizes = [f"{fit(peaks, A10_GIB * GIB)[0]} within an A10's {A10_GIB} GiB"]
        if device:
            sizes.append(f"{fit(peaks, device)[0]} within this device's {device / GIB:.0f} GiB")
        out += ["", *table, "", f"Pack sizes it picks: {'; '.join(sizes)}."]
    return "\n".join(out)


def tests_table(lines: list[dict]) -> str:
    tests = [line for line in lines if line.get("group") == "gpu_tests" and "outcome" in line]
    summary = next((line for line in step_lines(lines, "gpu_tests")), None)
    if summary is None:
        return "The gpu tests did not run."
    table = ["| test | outcome | s |", "|---|---|---|"]
    for test in tests:
        note = f": {test['message']}" if test["outcome"] != "passed" and test.get("message") else ""
        table.append(f"| {test['case']} | {test['outcome']}{note} | {test['seconds']:.1f} |")
    counts = ", ".join(f"{n} {k}" for k, n in (summary.get("result") or {}).items() if n)
    return "\n".join([f"pytest: {summary['status']} ({counts or 'nothing ran'})", "", *table])


def unfinished(lines: list[dict]) -> str:
    rows = [r for r in lines if "status" in r and r["status"] != "ok" and r.get("group") != "gpu_tests"]
    return "\n".join(f"- {r['group']}/{r['case']}: {r['status']} ({r.get('reason', 'see log.txt')})" for r in rows)


def document(lines: list[dict]) -> str:
    """The whole report: where and with what it ran, then one table per step group."""
    env = next((line for line in lines if line.get("group") == "environment"), {})
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
    sections = [
        f"`{env.get('command', 'python -m benchmarks.gpu_check run')}` ({env.get('mode', '?')} plan, budget "
        f"{env.get('budget_s', '?')} s), {env.get('date', '?')} on {env.get('gpu', '?')}; "
        f"source {env.get('source') or 'unknown'}; Python {env.get('python', '?')}, {versions}.",
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
