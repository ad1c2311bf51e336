"""torch.distributed.checkpoint (DCP) state dicts in unbroken checkpoints.

FSDP2 / DTensor / ShardedTensor state dicts saved here get what every unbroken checkpoint has:
an atomic commit (manifest written last, by rank 0, once every rank's files are durable and
checksummed: committed for all ranks or none), checksums verified before restore, retention,
the tracking index and read leases. DCP reshards on load, so a checkpoint saved by N ranks can
be loaded by M. Importing this module imports torch::

    from unbroken.checkpoint import dcp as udcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    udcp.load({"model": model_sd, "optim": optim_sd}, run)        # newest that verifies, or None
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
    ...
    udcp.save({"model": model_sd, "optim": optim_sd}, run, steps_completed=step)

Everything is a collective (every rank, same point, training thread). See :mod:`.api` for the
functions, :mod:`.writer` / :mod:`.reader` for the storage writer and reader DCP drives, and
:mod:`.safemeta` for how DCP's pickled ``.metadata`` is read without running arbitrary pickle.
"""

from .api import async_save, load, save, should_stop
from .reader import UnbrokenReader
from .writer import UnbrokenWriter

__all__ = ["UnbrokenReader", "UnbrokenWriter", "async_save", "load", "save", "should_stop"]
