"""Fault tolerance for framework training loops from one callback (each behind its extra).

* :mod:`unbroken.integrations.keras` - ``UnbrokenCallback`` for ``model.fit`` (Keras 3, ``unbroken[keras]``).
* :mod:`unbroken.integrations.transformers` - ``UnbrokenTrainerCallback`` and ``resume_path`` for the
  Hugging Face ``Trainer`` (``unbroken[transformers]``).
* :mod:`unbroken.integrations.lightning` - a ``CheckpointIO`` plugin and a stop callback for PyTorch
  Lightning's ``Trainer`` (``unbroken[lightning]``).

Each takes the ``run`` of ``unbroken.init()``; the run's checkpoints are atomic and verified,
resume picks the newest one that verifies, and a stop request saves and ends training cleanly
(the ``with`` block then exits 75 so `unbroken run` resumes it).
"""
