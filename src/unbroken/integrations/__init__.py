"""Fault tolerance for framework training loops from one callback (each behind its extra).

* :mod:`unbroken.integrations.keras` - ``UnbrokenCallback`` for ``model.fit`` (Keras 3, ``unbroken[keras]``).

Each takes the ``run`` of ``unbroken.init()``; the run's checkpoints are atomic and verified,
resume picks the newest one that verifies, and a stop request saves and ends training cleanly
(the ``with`` block then exits 75 so `unbroken run` resumes it).
"""
