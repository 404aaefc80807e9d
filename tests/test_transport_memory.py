"""A finished pipeline is freed with its results: a fleet run does not carry every server it has finished.

pypsrp keeps each pipeline in its runspace pool until the pipeline's ``close`` (a Terminate request exbe does not
send), and the pipeline points back at its pool: a reference cycle holding the pipeline's output objects and their
XML. Left there, a 100-server verify ended with about 900 such objects per server waiting for a full collection,
and every collection on the way walked them. Each test here runs with the cycle collector off, so what it shows is
freed by reference counting alone, at once.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from exbe.errors import ConnectionFailed
from exbe.sandbox.faults import Faults

from .conftest import first_server_session


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def test_an_exchange_read_is_freed_once_its_output_is_dropped(fleet, no_cycle_collector):
    with first_server_session(fleet) as session:
        result = session.run_cmdlets([[("Get-ExchangeServer", {"Identity": "exch01"})]])
        assert result.failed is None and result.output
        assert session._pools["exchange"].pipelines == {}, "the pool keeps no finished pipeline"
        first = weakref.ref(result.output[0])
        del result
        assert first() is None, "the server's object is freed with the result that held it"


def test_a_failed_script_and_a_lost_change_leave_no_pipeline_behind(fleet, no_cycle_collector):
    with first_server_session(fleet) as session:
        failed = session.run_scripts(["throw 'the step failed'"])
        assert failed.failed
        assert session._pools["winrm"].pipelines == {}
        session.run_cmdlets([[("Get-AuthConfig", {})]])  # the Exchange pool is open: the next request is a Command
        fleet.host("exch01").faults = Faults(drop_request="exchange:8")
        with pytest.raises(ConnectionFailed):
            session.run_cmdlets([[("Set-AuthConfig", {"NewCertificateThumbprint": "0" * 40})]])
        assert session._pools["exchange"].pipelines == {}, "a pipeline that raised is forgotten too"
