"""What GitHub and Hub failures mean (retry, wait how long, or give up), and that no secret leaks."""

from __future__ import annotations

import email.utils

import httpx2
import pytest
import requests
from github import GithubException, RateLimitExceededException
from huggingface_hub.errors import HfHubHTTPError

from pipeline.publishers.remote import (
    HostUnavailable,
    Redactor,
    classify_github,
    classify_hf,
    describe,
    host_wait,
)
from pipeline.retry import Retry

NOW = 1_000_000.0


def now() -> float:
    return NOW


def test_host_wait_reads_every_header_form() -> None:
    assert host_wait({"Retry-After": "7"}) == 7.0
    assert host_wait({"retry-after": email.utils.formatdate(NOW + 120, usegmt=True)}, now) == 120.0
    assert host_wait({"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, now) == 0.0  # in the past
    limited = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 30)}
    assert host_wait(limited, now) == 31.0
    assert host_wait({"X-RateLimit-Remaining": "12", "X-RateLimit-Reset": "1"}, now) is None
    assert host_wait({"RateLimit": '"api";r=0;t=55'}) == 56.0
    assert host_wait({}) is None and host_wait(None) is None


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (GithubException(502, {"message": "Bad Gateway"}, {}), Retry("HTTP 502", None)),
        (
            GithubException(429, {"message": "slow down"}, {"Retry-After": "3"}),
            Retry("HTTP 429", 3.0),
        ),
        (
            RateLimitExceededException(
                403,
                {"message": "API rate limit exceeded for user ID 1."},
                {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 60)},
            ),
            Retry("rate limited (HTTP 403)", 61.0),
        ),
        (
            GithubException(
                403, {"message": "You have exceeded a secondary rate limit."}, {"Retry-After": "5"}
            ),
            Retry("rate limited (HTTP 403)", 5.0),
        ),
        (GithubException(403, {"message": "Resource not accessible"}, {}), None),
        (GithubException(404, {"message": "Not Found"}, {}), None),
        (
            GithubException(
                422, {"message": "Validation Failed", "errors": [{"code": "already_exists"}]}, {}
            ),
            None,
        ),
        (requests.exceptions.ConnectionError("reset by peer"), Retry("connection failed")),
        (requests.exceptions.ReadTimeout("read timed out"), Retry("timed out")),
        (ConnectionResetError(104, "Connection reset by peer"), Retry("connection failed")),
        (
            requests.exceptions.RetryError("Max retries exceeded (too many 500 error responses)"),
            None,
        ),
    ],
)
def test_classify_github(exc: BaseException, expected: Retry | None) -> None:
    assert classify_github(exc, now) == expected


def _hf_error(status: int, headers: dict[str, str] | None = None) -> HfHubHTTPError:
    request = httpx2.Request("POST", "http://127.0.0.1:9/api/models/acme/m/commit/main")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return HfHubHTTPError(f"{status} error", response=response)


def test_classify_hf() -> None:
    assert classify_hf(HostUnavailable("HTTP 503 on POST /x", 503, 4.0)) == Retry(
        "HTTP 503 on POST /x", 4.0
    )
    assert classify_hf(_hf_error(502)) == Retry("HTTP 502", None)
    assert classify_hf(_hf_error(429, {"Retry-After": "9"})) == Retry("HTTP 429", 9.0)
    assert classify_hf(_hf_error(404)) is None
    assert classify_hf(_hf_error(403)) is None
    assert classify_hf(httpx2.ReadTimeout("slow")) == Retry("timed out")
    assert classify_hf(httpx2.RemoteProtocolError("peer closed")) == Retry("connection failed")
    assert classify_hf(ValueError("malformed")) is None


def test_describe_is_one_line_and_names_the_status() -> None:
    e = GithubException(
        422, {"message": "Validation Failed", "errors": [{"code": "already_exists"}]}, {}
    )
    assert describe(e) == "HTTP 422 Validation Failed (already_exists)"
    assert describe(_hf_error(404, {"X-Error-Message": "Repository not found"})) == (
        "HTTP 404 Repository not found"
    )
    retry_error = requests.exceptions.RetryError(
        "Max retries exceeded with url: /x (Caused by ResponseError('too many 500 error responses'))"
    )
    assert describe(retry_error).startswith(
        "the server kept failing through PyGithub's own retries"
    )
    assert "\n" not in describe(ValueError("a\nb"))


def test_redactor_removes_every_secret() -> None:
    r = Redactor(["ghp_SECRET123", None, "hf_SECRET456", ""])
    assert r("token ghp_SECRET123 and hf_SECRET456") == "token *** and ***"
    e = requests.exceptions.ConnectionError("https://x/?access_token=ghp_SECRET123 failed")
    assert "ghp_SECRET123" not in r.describe(e)
