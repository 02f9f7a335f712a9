"""The Hub publisher's hold on huggingface_hub's HTTP client: timeouts and fail-fast while a
publish runs, the library's own behaviour otherwise, through its public API only."""

from __future__ import annotations

import httpx2
import huggingface_hub
import pytest

from pipeline.publishers.hub_session import hub_session
from pipeline.publishers.remote import HostUnavailable
from tests.emulators.base import Emulator, Reply


class Echo(Emulator):
    name = "echo"

    def route(self, req) -> Reply:  # noqa: ANN001
        return Reply(200, b"ok")


def test_fail_fast_and_timeouts_only_while_publishing() -> None:
    with Echo() as server:
        # a host application's own factory: the next publish installs ours again
        huggingface_hub.set_client_factory(lambda: httpx2.Client())
        server.fail("GET", "/busy", status=503, times=2)
        server.slow("GET", "/slow", seconds=0.6, times=2)
        with hub_session(0.2):
            session = huggingface_hub.get_session()
            with pytest.raises(HostUnavailable, match="HTTP 503 on GET /busy"):
                session.get(server.url + "/busy")
            with pytest.raises(HostUnavailable, match="timed out .* on GET /slow"):
                session.get(server.url + "/slow")
            # a timeout the library chose for a call is its own
            assert session.get(server.url + "/slow", timeout=5).status_code == 200
        # no publish under way: the library's client, as it behaves by itself
        assert huggingface_hub.get_session().get(server.url + "/busy").status_code == 503
        assert server.errors == []
