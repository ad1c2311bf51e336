"""Full-size copies of a (possibly sharded) state dict's tensors, for the 2-rank DCP test programs."""

import torch


def full(value, prefix: str = "") -> dict:
    """Every tensor of a (nested) state dict, gathered to full size (a collective), keyed by its path."""
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            out.update(full(sub, f"{prefix}/{key}" if prefix else str(key)))
        return out
    if isinstance(value, torch.Tensor):
        return {prefix: (value.full_tensor() if hasattr(value, "full_tensor") else value).detach().clone()}
    return {}
