"""The classification tasks the glue task knows: the nine GLUE tasks and the embedded movie-review task.

Column names follow the hub's ``nyu-mll/glue`` dataset (what CSV/JSON files must use); ``tsv_columns`` maps them to
GLUE's own TSV files (a header name, or a column index for CoLA, whose TSVs have no header). Label ids follow the hub:
``label_values[i]`` lists the raw values that mean label i.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GlueTask:
    name: str
    text_fields: tuple[str, ...]
    label_values: tuple[tuple[str, ...], ...] | None  # None: regression
    metrics: tuple[str, ...]
    glue_dir: str | None = None
    tsv_columns: dict[str, str | int] = field(default_factory=dict)
    eval_files: dict[str, str] = field(default_factory=lambda: {"validation": "dev"})
    optional_eval: tuple[str, ...] = ()

    @property
    def is_regression(self) -> bool:
        return self.label_values is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_values is None else len(self.label_values)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]


def _pair(first: str, second: str, label: str = "label") -> dict[str, str]:
    return {first: first, second: second, "label": label}


_BINARY = (("0",), ("1",))
_ENTAILMENT = (("entailment", "0"), ("not_entailment", "1"))

GLUE_TASKS = {
    task.name: task
    for task in (
        GlueTask("cola", ("sentence",), _BINARY, ("matthews_correlation",), "CoLA", {"sentence": 3, "label": 1}),
        GlueTask("sst2", ("sentence",), _BINARY, ("accuracy",), "SST-2", {"sentence": "sentence", "label": "label"}),
        GlueTask(
            "mrpc",
            ("sentence1", "sentence2"),
            _BINARY,
            ("f1", "accuracy"),
            "MRPC",
            {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"},
        ),
        GlueTask(
            "stsb",
            ("sentence1", "sentence2"),
            None,
            ("pearson", "spearmanr"),
            "STS-B",
            _pair("sentence1", "sentence2", "score"),
        ),
        GlueTask(
            "qqp",
            ("question1", "question2"),
            _BINARY,
            ("f1", "accuracy"),
            "QQP",
            _pair("question1", "question2", "is_duplicate"),
        ),
        GlueTask(
            "mnli",
            ("premise", "hypothesis"),
            (("entailment", "0"), ("neutral", "1"), ("contradiction", "2")),
            ("accuracy",),
            "MNLI",
            {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"},
            {"matched": "dev_matched", "mismatched": "dev_mismatched"},
            optional_eval=("mismatched",),
        ),
        GlueTask("qnli", ("question", "sentence"), _ENTAILMENT, ("accuracy",), "QNLI", _pair("question", "sentence")),
        GlueTask(
            "rte", ("sentence1", "sentence2"), _ENTAILMENT, ("accuracy",), "RTE", _pair("sentence1", "sentence2")
        ),
        GlueTask("wnli", ("sentence1", "sentence2"), _BINARY, ("accuracy",), "WNLI", _pair("sentence1", "sentence2")),
        GlueTask("movie_reviews", ("sentence",), (("negative", "0"), ("positive", "1")), ("accuracy",)),
    )
}
HUB_GLUE_DATASET = "nyu-mll/glue"
HUB_EVAL_SPLITS = {"validation": "validation", "matched": "validation_matched", "mismatched": "validation_mismatched"}
