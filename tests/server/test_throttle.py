from hyco.server.throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_repeats_within_interval_are_counted_and_reported_with_the_next_line():
    clock = Clock()
    throttle = Throttle(1.0, clock=clock)
    assert throttle.check("a") == (True, 0)
    assert throttle.check("a") == (False, 0)
    assert throttle.check("a") == (False, 0)
    assert throttle.check("b") == (True, 0)  # other keys are independent
    clock.now += 1.0
    assert throttle.check("a") == (True, 2)
    assert throttle.check("a") == (False, 0)


def test_table_is_bounded():
    clock = Clock()
    throttle = Throttle(1.0, max_keys=3, clock=clock)
    for key in range(3):
        assert throttle.check(key) == (True, 0)
    assert throttle.check(99) == (True, 0)  # table cleared, newcomer logged
    assert throttle.check(0) == (True, 0)  # forgotten, logged again
