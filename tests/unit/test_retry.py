"""The one retry policy: exact waits (no sleeping), bounded attempts and time, final errors."""

from __future__ import annotations

import logging

import pytest

from pipeline.errors import IntegrityError, RemoteError
from pipeline.retry import Retry, RetryPolicy


class Flaky:
    """Fails with the given exceptions in turn, then returns "ok"."""

    def __init__(self, *failures: Exception):
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


class Transient(Exception):
    def __init__(self, wait: float | None = None):
        super().__init__("HTTP 503")
        self.wait = wait


def classify(e: BaseException) -> Retry | None:
    return Retry("HTTP 503", e.wait) if isinstance(e, Transient) else None


def policy(**kw) -> tuple[RetryPolicy, list[float]]:
    slept: list[float] = []
    now = {"t": 0.0}

    def sleep(s: float) -> None:
        slept.append(s)
        now["t"] += s

    return RetryPolicy(sleep=sleep, clock=lambda: now["t"], **kw), slept


def test_backoff_waits_are_exact_and_logged(caplog) -> None:
    p, slept = policy(base_delay=2, max_delay=5)
    fn = Flaky(Transient(), Transient(), Transient())
    with caplog.at_level(logging.WARNING, "pipeline.retry"):
        assert p.run(fn, what="GitHub o/r: upload x", classify=classify) == "ok"
    assert slept == [2, 4, 5] == p.waits
    assert fn.calls == 4
    assert "GitHub o/r: upload x: HTTP 503; retry 1 of 4 in 2.0 s" in caplog.text


def test_host_wait_wins_over_backoff() -> None:
    p, slept = policy()
    assert p.run(Flaky(Transient(7), Transient()), what="w", classify=classify) == "ok"
    assert slept == [7, 4]  # backoff continues from the attempt number


def test_attempts_are_bounded_and_the_error_names_what_failed() -> None:
    p, slept = policy(max_attempts=3)
    fn = Flaky(*[Transient() for _ in range(10)])
    with pytest.raises(RemoteError) as e:
        p.run(fn, what="Hugging Face acme/m: commit the release", classify=classify)
    assert fn.calls == 3 and slept == [2, 4]
    assert e.value.exit_code == 6
    msg = str(e.value)
    assert msg.startswith("Hugging Face acme/m: commit the release failed: HTTP 503")
    assert "gave up after 3 attempts in 6 s" in msg
    assert isinstance(e.value.__cause__, Transient)


def test_total_time_is_bounded_before_sleeping() -> None:
    p, slept = policy(max_total=60)
    fn = Flaky(Transient(30), Transient(3600))
    with pytest.raises(RemoteError, match="asks to wait 3600 s, beyond the 60 s"):
        p.run(fn, what="GitHub o/r: find release", classify=classify)
    assert slept == [30]  # the hour-long wait is not taken


def test_final_errors_are_not_retried_and_release_errors_pass_through() -> None:
    p, slept = policy()
    fn = Flaky(ValueError("HTTP 404 Not Found"))
    with pytest.raises(RemoteError, match=r"^w failed: HTTP 404 Not Found$"):
        p.run(fn, what="w", classify=classify)
    assert fn.calls == 1 and slept == []
    with pytest.raises(IntegrityError):
        p.run(Flaky(IntegrityError("bad")), what="w", classify=classify)


def test_describe_is_used_for_the_message() -> None:
    p, _ = policy()
    with pytest.raises(RemoteError) as e:
        p.run(
            Flaky(ValueError("token=secret")),
            what="w",
            classify=classify,
            describe=lambda ex: str(ex).replace("secret", "***"),
        )
    assert "secret" not in str(e.value) and "token=***" in str(e.value)
