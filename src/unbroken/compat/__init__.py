"""Compatibility layers: programs written for other training platforms run on unbroken.

* :mod:`unbroken.compat.determined` - Determined's core API (``core``, ``core_v2``,
  ``get_cluster_info``): change ``import determined as det`` to
  ``import unbroken.compat.determined as det``.

This layer sits above ``launch`` and ``runtime``: it composes ``unbroken.init()`` and never
reaches into the runtime's internals.
"""
