"""webui.throttle.LoginThrottle on a fake clock: free attempts, doubling back-off, a right
password starting afresh, attempts counted before they are answered, a bounded table."""

from webui.throttle import LoginThrottle


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_back_off_doubles_after_the_free_attempts_and_success_resets():
    clock = Clock()
    throttle = LoginThrottle(free_attempts=3, first_delay_s=1.0, max_delay_s=5.0, clock=clock)
    assert [throttle.admit("a") for _ in range(3)] == [0, 0, 0]  # the third blocks for 1 s
    assert throttle.admit("a") == 1.0 and throttle.admit("b") == 0
    clock.now += 1.0
    assert throttle.admit("a") == 0 and throttle.admit("a") == 2.0
    clock.now += 2.0
    assert throttle.admit("a") == 0 and throttle.admit("a") == 4.0
    clock.now += 4.0
    assert throttle.admit("a") == 0 and throttle.admit("a") == 5.0  # capped
    clock.now += 5.0
    assert throttle.admit("a") == 0
    throttle.succeeded("a")
    assert [throttle.admit("a") for _ in range(3)] == [0, 0, 0]


def test_attempts_count_when_admitted_so_parallel_ones_cannot_slip_through():
    throttle = LoginThrottle(free_attempts=2, clock=Clock())
    admitted = [throttle.admit("a") == 0 for _ in range(10)]  # ten sent at once, none answered yet
    assert admitted.count(True) == 2


def test_quiet_addresses_are_forgotten_and_the_table_is_bounded():
    clock = Clock()
    throttle = LoginThrottle(free_attempts=1, first_delay_s=10.0, forget_s=60.0, max_clients=100, clock=clock)
    assert throttle.admit("a") == 0 and throttle.admit("a") > 0
    clock.now += 10.0 + 61.0
    assert throttle.admit("a") == 0  # a fresh start after a quiet minute
    for i in range(1000):
        throttle.admit(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 100
