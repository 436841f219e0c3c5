"""lbcluster.plan: the pure planner, on plain values."""

from __future__ import annotations

import pytest

from lbcluster.plan import CONSOLIDATE_S, FILE_DELAY_S, RELOAD_GAP_S, Pending, Plan, Server, plan

S1, S2, S3 = "10.0.0.1:3000", "10.0.0.2:3000", "10.0.0.3:3000"


def test_nothing_to_do() -> None:
    step = plan({"s1": S1}, {"s1": Server(S1)}, Pending(), now=10.0)
    assert step == Plan(pending=Pending())
    assert not step.runtime
    assert step.write_file, "the file is checked (and written only if it differs)"


def test_a_new_backend_is_added_at_runtime() -> None:
    step = plan({"s1": S1, "s2": S2}, {"s1": Server(S1)}, Pending(), now=10.0)
    assert (step.add, step.enable, step.drain, step.delete) == (("s2",), (), (), ())
    assert step.runtime and not step.via_file and not step.consolidate
    assert step.pending == Pending(dynamic=frozenset({"s2"}), changed_at=10.0)


def test_a_departed_backend_is_drained_then_deleted() -> None:
    step = plan({"s1": S1}, {"s1": Server(S1), "s2": Server(S2)}, Pending(), now=10.0)
    assert (step.add, step.drain, step.delete) == ((), ("s2",), ("s2",))
    assert step.pending.drained == {"s2"}
    # Still there (busy) next time: not drained again, deleted again.
    again = plan({"s1": S1}, {"s1": Server(S1), "s2": Server(S2, maint=True)}, step.pending, 11.0)
    assert (again.drain, again.delete) == ((), ("s2",))
    assert again.pending.changed_at == 10.0, "nothing changed the second time"


def test_a_server_in_maintenance_by_someone_else_is_not_drained_again() -> None:
    step = plan({}, {"s2": Server(S2, maint=True)}, Pending(), now=1.0)
    assert (step.drain, step.delete) == ((), ("s2",))


def test_a_drained_backend_that_comes_back_is_enabled() -> None:
    pending = Pending(drained=frozenset({"s2"}))
    step = plan({"s1": S1, "s2": S2}, {"s1": Server(S1), "s2": Server(S2, True)}, pending, 5.0)
    assert (step.add, step.enable, step.drain, step.delete) == ((), ("s2",), (), ())
    assert step.pending.drained == frozenset()


def test_the_servers_of_a_departed_backend_leave_the_dynamic_set() -> None:
    pending = Pending(dynamic=frozenset({"s2", "s3"}), changed_at=1.0)
    step = plan({"s3": S3}, {"s2": Server(S2), "s3": Server(S3)}, pending, 2.0)
    assert step.pending.dynamic == {"s3"}


@pytest.mark.parametrize(
    ("live", "reason"),
    [
        (None, "the Runtime API is not used"),
        ({"s1": Server("10.0.0.9:3000")}, "the address of s1 changed"),
    ],
)
def test_what_the_runtime_api_cannot_do_goes_through_the_file(
    live: dict[str, Server] | None, reason: str
) -> None:
    pending = Pending(file_due=3.0)
    step = plan({"s1": S1, "s2": S2}, live, pending, now=1.0, defer_file=True)
    assert step.via_file == reason
    assert not step.runtime
    assert step.write_file, "never deferred"
    assert step.pending.file_due is None


def test_the_file_is_deferred_once_then_written_when_due() -> None:
    live = {"s1": Server(S1)}
    first = plan({"s1": S1, "s2": S2}, live, Pending(), now=10.0, defer_file=True)
    assert first.add == ("s2",) and not first.write_file
    assert first.pending.file_due == 10.0 + FILE_DELAY_S
    live = {"s1": Server(S1), "s2": Server(S2)}
    # Another event before it is due: the due time does not move.
    second = plan({"s1": S1, "s2": S2}, live, first.pending, now=10.1, defer_file=True)
    assert not second.write_file and second.pending.file_due == first.pending.file_due
    assert second.pending.next_due() == first.pending.file_due
    # Due: written, by an event or by the service's timer (not deferred).
    for defer in (True, False):
        due = plan({"s1": S1, "s2": S2}, live, first.pending, now=10.4, defer_file=defer)
        assert due.write_file and due.pending.file_due is None


def test_consolidation_reloads_once_the_membership_is_quiet() -> None:
    live = {"s1": Server(S1), "s2": Server(S2)}
    pending = Pending(dynamic=frozenset({"s2"}), changed_at=10.0)
    assert pending.next_due() == 10.0 + CONSOLIDATE_S
    early = plan({"s1": S1, "s2": S2}, live, pending, now=10.0 + CONSOLIDATE_S - 0.1)
    assert not early.consolidate
    quiet = plan({"s1": S1, "s2": S2}, live, pending, now=10.0 + CONSOLIDATE_S)
    assert quiet.consolidate and quiet.write_file
    # A change in that very step postpones it.
    busy = plan({"s1": S1, "s2": S2, "s3": S3}, live, pending, now=20.0)
    assert not busy.consolidate and busy.pending.changed_at == 20.0


def test_consolidation_waits_for_the_reload_gap_after_a_reload() -> None:
    live = {"s1": Server(S1), "s2": Server(S2)}
    reloaded = Pending().reloaded(100.0)
    # A join right after the reload, then quiet: not before RELOAD_GAP_S has passed.
    joined = plan({"s1": S1, "s2": S2}, {"s1": Server(S1)}, reloaded, now=101.0)
    assert joined.runtime and joined.pending.dynamic == {"s2"}
    assert joined.pending.next_due() == 100.0 + RELOAD_GAP_S
    quiet = 101.0 + CONSOLIDATE_S
    assert not plan({"s1": S1, "s2": S2}, live, joined.pending, now=quiet).consolidate
    due = plan({"s1": S1, "s2": S2}, live, joined.pending, now=100.0 + RELOAD_GAP_S)
    assert due.consolidate
    # Long after the last reload, the quiet time alone decides.
    late = plan({"s1": S1, "s2": S2}, {"s1": Server(S1)}, reloaded, now=200.0)
    assert late.pending.next_due() == 200.0 + CONSOLIDATE_S


def test_after_a_reload_nothing_is_pending() -> None:
    pending = Pending(frozenset({"a"}), frozenset({"b"}), 3.0, 4.0)
    assert pending.reloaded(7.0) == Pending(reloaded_at=7.0)
    assert Pending().next_due() is None
