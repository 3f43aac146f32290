"""Property-based tests: random operation sequences on the pure node lifecycle."""

# ruff: noqa: PT017 - hypothesis explores both outcomes; the except branch checks the error

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from neocloud.fleet import domain
from neocloud.fleet.domain import TRANSITIONS, Lifecycle, NodeState
from neocloud.kernel.errors import IllegalTransition

S = NodeState
OPS = st.one_of(
    st.tuples(st.just("move"), st.sampled_from(list(NodeState))),
    st.sampled_from(
        [("cordon", None), ("drain", None), ("uncordon", None), ("retire", None), ("fail", None)]
    ),
)


def _apply(lc: Lifecycle, op: str, target: NodeState | None) -> Lifecycle:
    if op == "move":
        assert target is not None
        return domain.settle(lc, target)[0]
    if op == "cordon":
        return domain.cordon(lc)[0]
    if op == "drain":
        return domain.cordon(lc, drain=True)[0]
    if op == "uncordon":
        return domain.uncordon(lc)[0]
    if op == "retire":
        return domain.retire(lc)[0]
    return domain.fail(lc)[0]


@settings(max_examples=300, deadline=None)
@given(start=st.sampled_from(list(NodeState)), ops=st.lists(OPS, max_size=40))
def test_random_operation_sequences_keep_the_invariants(
    start: NodeState, ops: list[tuple[str, NodeState | None]]
) -> None:
    lc = Lifecycle(start)
    # Was the node failed, and has it since passed through repair and then burn-in?
    failed_since_repair = start == S.FAILED
    repaired = False
    for op, target in ops:
        before = lc
        try:
            lc = _apply(lc, op, target)
        except IllegalTransition as exc:
            # An illegal move names exactly the allowed targets and changes nothing.
            assert exc.details["allowed"] == sorted(s.value for s in TRANSITIONS[before.state])
            assert exc.details["current"] == before.state.value
            continue
        assert lc.state in NodeState
        if lc.drain:  # an eviction request only ever concerns a running workload
            assert lc.state in domain.BUSY or lc.state == S.DRAINING
        if before.state == S.RETIRED:
            assert lc == before  # retired is terminal
        if op in ("cordon", "drain"):
            assert lc.state != S.AVAILABLE
            if before.state in domain.BUSY:
                assert lc.state == S.DRAINING  # the tenant keeps running
        if lc.hold and before.hold and op == "move":
            assert lc.state != S.AVAILABLE or before.state == S.CORDONED
        if lc.state == S.FAILED:
            failed_since_repair, repaired = True, False
        elif failed_since_repair:
            if lc.state == S.REPAIR:
                repaired = True
            if lc.state == S.AVAILABLE:
                assert repaired, "a failed node became available without repair"
            if lc.state == S.BURN_IN and repaired:
                failed_since_repair = False


@given(state=st.sampled_from(list(NodeState)), target=st.sampled_from(list(NodeState)))
def test_transition_is_exactly_the_table(state: NodeState, target: NodeState) -> None:
    try:
        assert domain.transition(state, target) == target
        assert target in TRANSITIONS[state]
    except IllegalTransition as exc:
        assert target not in TRANSITIONS[state]
        assert exc.details["allowed"] == sorted(s.value for s in TRANSITIONS[state])


@given(state=st.sampled_from(sorted(set(NodeState) - {S.RETIRED})))
def test_failure_takes_any_live_node_out(state: NodeState) -> None:
    lc, _ = domain.fail(Lifecycle(state))
    assert lc.state == S.FAILED
