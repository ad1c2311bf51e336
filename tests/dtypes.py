"""The dtypes the tensor-file tests cover (every one safetensors knows that numpy or torch has)."""

from __future__ import annotations

import torch

NUMPY_DTYPES = ["float64", "float32", "float16", "int64", "int32", "int16", "int8",
                "uint64", "uint32", "uint16", "uint8", "bool"]
TORCH_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn,
                torch.float8_e5m2, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint64,
                torch.uint32, torch.uint16, torch.uint8, torch.bool]
