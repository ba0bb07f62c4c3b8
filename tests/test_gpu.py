"""GPU-only paths (fp16 training on CUDA); skipped on machines without CUDA, such as CI."""

import json

import pytest
import torch

import run_glue

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("scheme", ["A", "B"])
def test_fp16_run_on_cuda(scheme, tiny_bert_dir, tiny_glue_dir, tmp_path):
    argv = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "sst2", "--glue_dir", str(tiny_glue_dir)]
    argv += ["--output_dir", str(tmp_path), "--max_steps", "3", "--fp16", "true", "--lora_init", scheme]
    assert run_glue.main(argv) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "done"
