"""The glue task: a sequence classifier finetuned on one of GLUE's nine tasks (from a GLUE-layout folder, CSV/JSON
files or the hub) or on the embedded movie-review snippets. Its command-line script is run_glue.py."""

from lorakit.models.arguments import LoraArguments, ModelArguments
from lorakit.tasks.base import RunArguments
from lorakit.tasks.classification import SequenceClassificationTask, TaskData
from lorakit.tasks.glue.data import GlueDataArguments, load_task_data
from lorakit.training.arguments import TrainArguments


class GlueClassification(SequenceClassificationTask):
    name = "glue"
    script = "run_glue.py"
    argument_types = (ModelArguments, LoraArguments, GlueDataArguments, TrainArguments)

    def label_space(self, args: RunArguments):
        return args.data.task

    def read_data(self, args: RunArguments) -> TaskData:
        return load_task_data(args.data)
