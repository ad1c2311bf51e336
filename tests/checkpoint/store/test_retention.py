"""Retention policies pick exactly the checkpoints they should, and never protected ones."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unbroken.checkpoint import keep_all, keep_best, keep_every, keep_latest
from unbroken.checkpoint.format.manifest import Manifest
from unbroken.checkpoint.store.retention import RetentionPolicy, metric_value, to_delete
from unbroken.errors import ConfigError


def ck(uuid: str, steps: int, created_at: float | None = None, **metadata) -> Manifest:
    return Manifest(uuid=uuid, steps_completed=steps, files=(), metadata=metadata,
                    created_at=float(steps) if created_at is None else created_at)


# steps:       100    200    300    400    500    600
# val_loss:    0.9    0.5    0.7    0.5    0.8    (none)
# accuracy:    0.1    0.6    0.7    0.65   0.2    0.9
CKPTS = [
    ck("a", 100, metrics={"val_loss": 0.9, "accuracy": 0.1}),
    ck("b", 200, metrics={"val_loss": 0.5, "accuracy": 0.6}),
    ck("c", 300, metrics={"val_loss": 0.7}, accuracy=0.7),   # top-level metadata works too
    ck("d", 400, metrics={"val_loss": 0.5, "accuracy": 0.65}),
    ck("e", 500, metrics={"val_loss": 0.8, "accuracy": 0.2}),
    ck("f", 600, metrics={"accuracy": 0.9}),
]


@pytest.mark.parametrize("policy, expected", [
    (keep_latest(1), {"f"}),
    (keep_latest(2), {"e", "f"}),
    (keep_latest(100), set("abcdef")),
    (keep_best(1, "val_loss"), {"d"}),                       # tie 0.5: the newer one wins
    (keep_best(2, "val_loss", mode="min"), {"b", "d"}),
    (keep_best(3, "val_loss", mode="min"), {"b", "c", "d"}),
    (keep_best(1, "val_loss", mode="max"), {"a"}),
    (keep_best(2, "accuracy", mode="max"), {"c", "f"}),
    (keep_best(2, "missing_metric"), set()),
    (keep_every(200), {"b", "d", "f"}),
    (keep_every(300), {"c", "f"}),
    (keep_every(1), set("abcdef")),
    (keep_every(1000), set()),
    (keep_all(), set("abcdef")),
    (keep_latest(1) | keep_best(1, "val_loss"), {"d", "f"}),
    (keep_latest(2) | keep_every(300), {"c", "e", "f"}),
    (keep_latest(1) | keep_best(2, "val_loss") | keep_every(500), {"b", "d", "e", "f"}),
    (keep_best(1, "accuracy", mode="max") | keep_best(1, "accuracy", mode="min"), {"a", "f"}),
])
def test_policies_keep_exactly_the_expected_checkpoints(policy, expected):
    assert policy.keep(CKPTS) == expected
    assert policy.keep(list(reversed(CKPTS))) == expected  # the order given does not matter
    assert {m.uuid for m in to_delete(policy, CKPTS, protected=())} == set("abcdef") - expected


def test_keep_latest_breaks_step_ties_by_creation_time():
    older, newer = ck("old", 10, created_at=1.0), ck("new", 10, created_at=2.0)
    assert keep_latest(1).keep([newer, older]) == {"new"}


def test_non_finite_and_non_numeric_metrics_are_not_candidates():
    cks = [ck("nan", 1, loss=math.nan), ck("inf", 2, loss=math.inf), ck("str", 3, loss="0.1"),
           ck("bool", 4, loss=True), ck("ok", 5, loss=2.0), ck("none", 6, loss=None)]
    assert keep_best(3, "loss").keep(cks) == {"ok"}
    assert [metric_value(c, "loss") for c in cks] == [None, None, None, None, 2.0, None]


def test_metrics_dict_takes_precedence_over_top_level_metadata():
    c = ck("x", 1, metrics={"loss": 1.0}, loss=5.0)
    assert metric_value(c, "loss") == 1.0


def test_to_delete_never_returns_protected_and_keeps_order():
    doomed = to_delete(keep_latest(1), CKPTS, protected={"a", "c"})
    assert [m.uuid for m in doomed] == ["b", "d", "e"]


def test_empty_input():
    for policy in (keep_latest(3), keep_best(1, "x"), keep_every(5), keep_all()):
        assert policy.keep([]) == set()
        assert to_delete(policy, [], protected={"x"}) == []


@pytest.mark.parametrize("make", [
    lambda: keep_latest(0), lambda: keep_latest(-1), lambda: keep_latest(1.5), lambda: keep_latest("2"),
    lambda: keep_latest(True), lambda: keep_latest(None),
    lambda: keep_best(0, "loss"), lambda: keep_best(1, "loss", mode="avg"), lambda: keep_best(1, "loss", mode="MIN"),
    lambda: keep_every(0), lambda: keep_every(-10), lambda: keep_every(2.0),
])
def test_bad_arguments_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_union_with_a_non_policy_is_a_type_error():
    with pytest.raises(TypeError):
        keep_latest(1) | 3


def test_reprs_are_readable():
    policy = keep_latest(3) | keep_best(2, "val_loss", mode="max") | keep_every(10)
    assert repr(policy) == "keep_latest(3) | keep_best(2, 'val_loss', mode='max') | keep_every(10)"


def test_base_class_is_abstract():
    with pytest.raises(NotImplementedError):
        RetentionPolicy().keep(CKPTS)


checkpoints = st.lists(
    st.tuples(st.integers(0, 50), st.floats(0, 1) | st.none()), min_size=0, max_size=12,
).map(lambda rows: [ck(f"u{i}", steps, metrics={} if loss is None else {"loss": loss})
                    for i, (steps, loss) in enumerate(rows)])
policies = st.recursive(
    st.builds(keep_latest, st.integers(1, 5)) | st.builds(keep_every, st.integers(1, 7))
    | st.builds(keep_best, st.integers(1, 4), st.just("loss"), st.sampled_from(["min", "max"])),
    lambda c: st.tuples(c, c).map(lambda ab: ab[0] | ab[1]), max_leaves=4)


@settings(max_examples=150, deadline=None)
@given(checkpoints, policies, st.data())
def test_to_delete_is_the_complement_of_kept_and_protected(cks, policy, data):
    uuids = [c.uuid for c in cks]
    protected = set(data.draw(st.lists(st.sampled_from(uuids), unique=True))) if uuids else set()
    kept = policy.keep(cks)
    doomed = [c.uuid for c in to_delete(policy, cks, protected)]
    assert kept <= set(uuids)
    assert not set(doomed) & protected
    assert set(doomed) == set(uuids) - kept - protected
    assert doomed == [u for u in uuids if u in set(doomed)]  # input order kept


# -- references between incremental checkpoints ---------------------------------------------------
def _with_refs(uuid: str, steps: int, *refs: str):
    from unbroken.checkpoint.format.manifest import FileEntry, FileRef, Manifest
    return Manifest(uuid, steps, (FileEntry("state.json", 1, "00000000"),), {}, float(steps),
                    refs=tuple(FileRef(r, "tensors.safetensors", 8, "00000000", ("t",)) for r in refs))


def test_spare_referenced_keeps_what_staying_checkpoints_need_transitively():
    from unbroken.checkpoint.store.references import referrers, spare_referenced
    a, b, c, d = _with_refs("a", 1), _with_refs("b", 2, "a"), _with_refs("c", 3, "b"), _with_refs("d", 4)
    known = [a, b, c, d]
    # c stays and needs b, which needs a: nothing of a, b may go.
    assert spare_referenced([a, b], known) == []
    # c goes too: a and b are free.
    assert [m.uuid for m in spare_referenced([a, b, c], known)] == ["a", "b", "c"]
    assert [m.uuid for m in spare_referenced([a, d], known)] == ["d"]
    assert referrers("a", known) == ["b"] and referrers("d", known) == []
