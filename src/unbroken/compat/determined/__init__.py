"""Determined's core API on unbroken: change one import and the program gets atomic, verified
checkpoints, resume, restarts and history.

::

    import unbroken.compat.determined as det          # was: import determined as det
    from unbroken.compat.determined import core       # was: from determined import core
    from unbroken.compat.determined import core_v2    # was: from determined.experimental import core_v2

``det.get_cluster_info()`` is None off-cluster and the trial's info under `unbroken run`;
``det.LOG_FORMAT`` is Determined's log format. See docs/migrating.md.
"""

from . import core, core_v2
from ._info import ClusterInfo, TrialInfo, get_cluster_info
from .expconf import ExperimentPlan, load_experiment_config

LOG_FORMAT = "%(levelname)s: [%(process)s] %(name)s: %(message)s"

__all__ = ["LOG_FORMAT", "ClusterInfo", "ExperimentPlan", "TrialInfo", "core", "core_v2", "get_cluster_info",
           "load_experiment_config"]
