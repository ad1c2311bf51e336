"""Ray Train's API on unbroken, with no Ray installed or started.

::

    from unbroken.compat import ray_train as train                   # was: from ray import train
    from unbroken.compat.ray_train import Checkpoint, ScalingConfig, RunConfig, FailureConfig
    from unbroken.compat.ray_train.torch import TorchTrainer         # was: from ray.train.torch import ...

``TorchTrainer(train_loop_per_worker, train_loop_config=..., scaling_config=ScalingConfig(num_workers=N),
run_config=RunConfig(name=..., storage_path=..., failure_config=FailureConfig(max_failures=M))).fit()``
runs the training function on N local workers (one torch.distributed group) under ``unbroken run``:
a failed worker restarts the whole group from the newest checkpoint, every checkpoint given to
``report()`` is committed atomically and verified before it is used, and ``TorchTrainer.restore(path)``
resumes an interrupted driver. The experiment folder ``storage_path/name`` is an unbroken home
(``UNBROKEN_HOME=storage_path/name unbroken show NAME``). See docs/migrating.md.

Importing this package does not import torch; ``unbroken.compat.ray_train.torch`` does.
"""

from ._api import get_checkpoint, get_context, report
from ._checkpoint import Checkpoint
from ._config import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ._context import TrainContext
from ._result import Result, TrainingFailedError

__all__ = ["Checkpoint", "CheckpointConfig", "FailureConfig", "Result", "RunConfig", "ScalingConfig", "TrainContext",
           "TrainingFailedError", "get_checkpoint", "get_context", "report"]
