"""Ray Tune's API on unbroken's sweeps: a Tune program runs with only its import line changed.

::

    from unbroken import tune                       # was: from ray import tune
    from unbroken.tune.schedulers import ASHAScheduler

    class Train(tune.Trainable):
        def setup(self, config): ...
        def step(self): return {"loss": ...}
        def save_checkpoint(self, checkpoint_dir): ...
        def load_checkpoint(self, checkpoint): ...

    analysis = tune.run(Train, config={"lr": tune.loguniform(1e-4, 1e-1)}, num_samples=8,
                        stop={"training_iteration": 20}, scheduler=ASHAScheduler(metric="loss", mode="min"),
                        checkpoint_freq=2, max_failures=3, resume=True)
    print(analysis.best_config)

Each trial is an ordinary unbroken trial (its own processes under ``unbroken run``: restarts,
verified checkpoints, history in ``unbroken ls/show``), and a killed program continues where it
stopped when it is run again (``resume=True``). Differences from Ray Tune: trials are processes,
so a trainable must be defined at the top level of a module or script; schedulers count
``training_iteration`` only; PBT runs in synchronous generations; ``stop`` is a dict.
"""

from ..errors import LaunchError as TuneError
from ..sweep.function_api import Checkpoint, get_checkpoint, report
from ..sweep.results import SweepAnalysis as ExperimentAnalysis
from ..sweep.space import choice, grid_search, loguniform, randint, uniform
from ..sweep.trainable import Trainable
from . import schedulers, search
from .api import run

__all__ = ["Checkpoint", "ExperimentAnalysis", "Trainable", "TuneError", "choice", "get_checkpoint", "grid_search",
           "loguniform", "randint", "report", "run", "schedulers", "search", "uniform"]
