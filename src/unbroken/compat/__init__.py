"""Compatibility layers: programs written for other training platforms run on unbroken.

* :mod:`unbroken.compat.determined` - Determined's core API (``core``, ``core_v2``,
  ``get_cluster_info``): change ``import determined as det`` to
  ``import unbroken.compat.determined as det``.
* :mod:`unbroken.compat.ray_train` - Ray Train's fault-tolerance API (``report``, ``get_checkpoint``,
  ``get_context``, ``Checkpoint``, the configs; ``unbroken.compat.ray_train.torch.TorchTrainer``) with
  no Ray: the workers are a local torch.distributed group under ``unbroken run --nproc-per-node``.

This layer sits above ``launch`` and ``runtime``: it composes ``unbroken.init()`` and never
reaches into the runtime's internals.
"""
