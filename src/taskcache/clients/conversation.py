"""A remote client call as a conversation: the RPCs it makes, decided without network I/O.

A call is a generator (:data:`Steps`) that yields one :class:`Exchange` at a time and is sent
its response, or has the error that RPC met thrown in, to handle or let through; what it
returns is the call's result. :func:`converse` and :func:`converse_async` run one over a sync
or an async ``send``, so the control flow of every call (which RPCs, in what order, what an
error means) is written once for both twins, which differ only in the ``await``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from taskcache.rpcs import Rpc

_Result = TypeVar("_Result")

# Responses arrive typed as the generic Message; each step annotates the one it expects.
Steps = Generator["Exchange", Any, _Result]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One RPC of a call: ``request`` sent to ``rpc`` with the extra ``headers``."""

    rpc: Rpc
    request: Message
    headers: Mapping[str, str] | None = None


class _Conversation(Generic[_Result]):
    """The state of a running call: the exchange it waits on (None once it has returned)."""

    def __init__(self, steps: Steps[_Result]) -> None:
        self._steps = steps
        self.pending: Exchange | None = None
        self._advance(steps.__next__)

    def reply(self, response: Message) -> None:
        """Hand ``response`` to the call and take its next exchange."""
        self._advance(lambda: self._steps.send(response))

    def fail(self, error: BaseException) -> None:
        """Raise ``error`` where the call waits; what it does not handle propagates."""
        self._advance(lambda: self._steps.throw(error))

    @property
    def result(self) -> _Result:
        """What the call returned (only once ``pending`` is None)."""
        return self._result

    def _advance(self, step: Callable[[], Exchange]) -> None:
        try:
            self.pending = step()
        except StopIteration as stop:
            self.pending = None
            self._result: _Result = stop.value


def converse(steps: Steps[_Result], send: Callable[[Exchange], Message]) -> _Result:
    """Run the call ``steps``, each exchange sent with ``send``; return its result.

    Every error ``send`` raises (a cancellation too) is raised inside the call, so its
    ``with`` blocks clean up and it may handle the error; what it raises propagates.
    """
    conversation = _Conversation(steps)
    while (exchange := conversation.pending) is not None:
        try:
            response = send(exchange)
        except BaseException as error:
            conversation.fail(error)
        else:
            conversation.reply(response)
    return conversation.result


async def converse_async(
    steps: Steps[_Result], send: Callable[[Exchange], Awaitable[Message]]
) -> _Result:
    """See :func:`converse` (``send`` is awaited)."""
    conversation = _Conversation(steps)
    while (exchange := conversation.pending) is not None:
        try:
            response = await send(exchange)
        except BaseException as error:
            conversation.fail(error)
        else:
            conversation.reply(response)
    return conversation.result
