"""``ray.train.torch`` on unbroken: ``TorchTrainer``, ``prepare_model``, ``get_device``, ``prepare_data_loader``.

The workers form one torch.distributed group (gloo on CPU; NCCL for CUDA tensors when
``use_gpu=True``), created by ``unbroken.init()`` before ``train_loop_per_worker`` starts. The
helpers are for the training function (training thread); torch is imported here only.
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ConfigError
from ._api import current_session
from ._trainer import DataParallelTrainer


class TorchTrainer(DataParallelTrainer):
    """Ray's TorchTrainer: see :class:`~._trainer.DataParallelTrainer`."""


def _world() -> tuple[int, int]:
    session = current_session()
    if session is None:
        return 0, 1
    return session.group.local_rank, session.group.size


def get_device() -> torch.device:
    """This worker's device: ``cuda:<local rank>`` (modulo the GPUs present) with ``use_gpu=True``, else CPU.

    ConfigError when ``use_gpu=True`` and CUDA is not available. Outside a worker: CUDA if present.
    """
    session = current_session()
    use_gpu = torch.cuda.is_available() if session is None else session.use_gpu
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("ScalingConfig(use_gpu=True), but torch.cuda.is_available() is False on this machine")
    local_rank, _size = _world()
    torch.cuda.set_device(local_rank % torch.cuda.device_count())
    return torch.device("cuda", torch.cuda.current_device())


def prepare_model(model: torch.nn.Module, move_to_device: bool = True, parallel_strategy: str | None = "ddp",
                  parallel_strategy_kwargs: dict[str, Any] | None = None) -> torch.nn.Module:
    """Move ``model`` to this worker's device and wrap it in DistributedDataParallel when there are
    several workers (``parallel_strategy=None``: no wrapping; 'fsdp' is not supported)."""
    if parallel_strategy not in ("ddp", None):
        raise ConfigError(f"prepare_model(parallel_strategy={parallel_strategy!r}): only 'ddp' or None")
    device = get_device()
    if move_to_device:
        model = model.to(device)
    _local_rank, size = _world()
    if size <= 1 or parallel_strategy is None:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, **(parallel_strategy_kwargs or {}))


def prepare_data_loader(data_loader: torch.utils.data.DataLoader, add_dist_sampler: bool = True,
                        move_to_device: bool = True) -> torch.utils.data.DataLoader:
    """Give each worker its share of ``data_loader``'s dataset (a DistributedSampler; shuffling kept).

    Batches are not moved to the device here (move them in the loop). Call
    ``loader.sampler.set_epoch(epoch)`` each epoch when shuffling, as with plain DDP.
    """
    _local_rank, size = _world()
    if size <= 1 or not add_dist_sampler:
        return data_loader
    from torch.utils.data import DataLoader, RandomSampler  # noqa: PLC0415
    from torch.utils.data.distributed import DistributedSampler  # noqa: PLC0415

    session = current_session()
    shuffle = isinstance(data_loader.sampler, RandomSampler)
    sampler = DistributedSampler(data_loader.dataset, num_replicas=size, rank=session.group.rank, shuffle=shuffle)
    return DataLoader(data_loader.dataset, batch_size=data_loader.batch_size, sampler=sampler,
                      num_workers=data_loader.num_workers, collate_fn=data_loader.collate_fn,
                      pin_memory=data_loader.pin_memory, drop_last=data_loader.drop_last)


__all__ = ["TorchTrainer", "get_device", "prepare_data_loader", "prepare_model"]
