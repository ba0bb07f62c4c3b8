"""The prepared GPU check: one call on a lent GPU measures what only a GPU can show, most important first.

    python -m benchmarks.gpu_check carry                 # here: download the wheels the GPU machine lacks into .whl/
    bash benchmarks/gpu_check.sh                         # there (device run, carry .whl): install them, run into $OUT
    python -m benchmarks.gpu_check table <out> --document docs/benchmarks.md   # here: the returned JSON as tables
    python -m benchmarks.gpu_check run --smoke --out <folder>                   # any CPU: the same plan, tiny models

`run` works through `plan.gpu_plan` (or `plan.smoke_plan`) in order. Every step is its own process under its own
timeout, cut short by the whole run's budget; a step that fails, times out or finds no time left is recorded as such
and the next step goes on. Each result is appended to `<out>/results.jsonl` as it comes (one JSON object a line),
every process's output to `<out>/log.txt`, the `gpu`-marked tests' report to `<out>/gpu_tests.xml`.
"""
