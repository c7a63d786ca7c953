from hypothesis import given
from hypothesis import strategies as st

from actors.runtime.restart import RestartPolicy, decide_restart

POLICY = RestartPolicy(base_delay=0.5, max_delay=8.0, intensity=4, period=10.0)


def test_backoff_doubles_until_the_limit():
    history, delays = (), []
    for now in (0.0, 1.0, 2.0, 3.0, 4.0):
        decision = decide_restart(POLICY, history, now)
        history = decision.history
        delays.append(decision.delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, None]


def test_old_restarts_fall_out_of_the_period():
    decision = decide_restart(POLICY, (0.0, 1.0, 2.0, 3.0), 12.5)
    assert decision.history == (3.0, 12.5) and decision.delay == 1.0


@given(st.lists(st.floats(0, 1000), max_size=30).map(sorted))
def test_delay_is_bounded_and_limit_is_exact(times):
    history = ()
    for now in times:
        decision = decide_restart(POLICY, history, now)
        within = [t for t in history if now - t < POLICY.period]
        assert (decision.delay is None) == (len(within) + 1 > POLICY.intensity)
        if decision.delay is not None:
            assert POLICY.base_delay <= decision.delay <= POLICY.max_delay
        history = decision.history
