"""The GPU targets the benchmarks are judged by (issues 6 and 15), in one place, light enough for the tables."""

A10_GIB = 22.5  # what an A10's 24 GB leave to tensors
PACK_TARGETS = {  # benchmark group → (case, at least this × the stock rate of the same run, the goal)
    "roberta": [("pack22", 15.0, 30.0), ("ours", 1.5, None)],
    "qlora": [("pack8", 4.0, 6.0)],
}
