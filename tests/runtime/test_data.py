"""ResumableLoader: a resumed loader hands out exactly the batches an uninterrupted one would."""

import pytest

torch = pytest.importorskip("torch")

from unbroken import ResumableLoader  # noqa: E402
from unbroken.errors import ConfigError, StateMismatch  # noqa: E402


def dataset(n=23):
    return torch.utils.data.TensorDataset(torch.arange(n))


def take(it, k):
    return [next(it)[0].tolist() for _ in range(k)]


@pytest.mark.parametrize("cut", [0, 1, 5, 6, 7, 13])
def test_resume_mid_epoch_and_at_epoch_end(cut):
    ref = take(ResumableLoader(dataset(), 4, seed=3).batches(), 20)
    first = ResumableLoader(dataset(), 4, seed=3)
    got = take(first.batches(), cut)
    second = ResumableLoader(dataset(), 4, seed=3)
    second.load_state_dict(first.state_dict())
    got += take(second.batches(), 20 - cut)
    assert got == ref


def test_epochs_differ_and_cover_the_dataset():
    loader = ResumableLoader(dataset(), 4, seed=1)
    e0 = [x for b in loader for x in b[0].tolist()]
    e1 = [x for b in loader for x in b[0].tolist()]
    assert sorted(e0) == sorted(e1) == list(range(23)) and e0 != e1 and loader.epoch == 2


def test_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    list(ResumableLoader(dataset(), 4, seed=1))
    assert torch.equal(torch.rand(1), expected)


def test_mismatch_and_bad_arguments():
    loader = ResumableLoader(dataset(), 4, seed=1)
    with pytest.raises(StateMismatch, match="data order"):
        ResumableLoader(dataset(30), 4, seed=1).load_state_dict(loader.state_dict())
    with pytest.raises(ConfigError, match="sampler"):
        ResumableLoader(dataset(), 4, sampler=None)
