"""The remote clients' calls as conversations: the sync and async drivers hand each response
(or error) to the call, and a call's clean-up runs when its RPC is interrupted.

Every remote client test runs these drivers end to end; these pin what they promise on their
own, with a scripted ``send`` in place of a transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from flyteidl2.cacheservice.v2 import cacheservice_pb2 as v2
from google.protobuf.message import Message

from taskcache import rpcs
from taskcache.clients.conversation import Exchange, Steps, converse, converse_async
from taskcache.errors import NotFoundError, UnavailableError

FOUND = v2.GetCacheRequest()


def _call(events: list[str]) -> Steps[str]:
    """Get; on NotFound, Delete and report "missing"; record when its clean-up runs."""
    try:
        try:
            response = yield Exchange(rpcs.GET, FOUND)
        except NotFoundError:
            yield Exchange(rpcs.DELETE, FOUND, {"h": "v"})
            return "missing"
        assert response is FOUND
        return "found"
    finally:
        events.append("cleaned up")


def _scripted(*outcomes: Message | BaseException) -> tuple[list[Exchange], Callable[..., Message]]:
    sent: list[Exchange] = []
    pending = list(outcomes)

    def send(exchange: Exchange) -> Message:
        sent.append(exchange)
        outcome = pending.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return sent, send


def _run(steps: Steps[str], send: Callable[..., Message], *, asynchronous: bool) -> str:
    if not asynchronous:
        return converse(steps, send)

    async def send_async(exchange: Exchange) -> Message:
        return send(exchange)

    return asyncio.run(converse_async(steps, send_async))


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_response_is_sent_into_the_call(asynchronous: bool) -> None:
    events: list[str] = []
    sent, send = _scripted(FOUND)
    assert _run(_call(events), send, asynchronous=asynchronous) == "found"
    assert [exchange.rpc for exchange in sent] == [rpcs.GET]
    assert events == ["cleaned up"]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_an_error_the_call_handles_leads_to_its_next_rpc(asynchronous: bool) -> None:
    events: list[str] = []
    sent, send = _scripted(NotFoundError("gone"), FOUND)
    assert _run(_call(events), send, asynchronous=asynchronous) == "missing"
    assert [(exchange.rpc, exchange.headers) for exchange in sent] == [
        (rpcs.GET, None),
        (rpcs.DELETE, {"h": "v"}),
    ]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("error", [UnavailableError("down"), KeyboardInterrupt()])
def test_an_error_the_call_does_not_handle_propagates_after_its_clean_up(
    asynchronous: bool, error: BaseException
) -> None:
    events: list[str] = []
    _, send = _scripted(error)
    with pytest.raises(type(error)) as raised:
        _run(_call(events), send, asynchronous=asynchronous)
    assert raised.value is error
    assert events == ["cleaned up"]


def test_cancelling_the_awaiting_task_cleans_up_the_call() -> None:
    events: list[str] = []

    async def never_answers(exchange: Exchange) -> Message:
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        return await answer

    async def main() -> None:
        task = asyncio.create_task(converse_async(_call(events), never_answers))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert events == ["cleaned up"]
