"""Sync/async twins stay in step: same public names, same signatures modulo ``async``, and
every async method's docstring either states the contract or points at its sync twin's.

The twins are hand-written (the async ones are thin: the shared rules live in one place each —
``_CachePolicy``, ``RemoteRules``, ``payload``); this test is what keeps them from drifting.
Behaviour tests run both twins (``test_behaviour_suite.py``, ``test_async_manager.py``,
``test_remote_client.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypedDict, Unpack, is_typeddict

import pytest

from taskcache import open as open_catalog
from taskcache import open_async as open_async_catalog
from taskcache.clients import transports
from taskcache.clients.base import (
    AsyncClient,
    AsyncOperatorClient,
    AsyncWrites,
    Client,
    OperatorClient,
    Writes,
)
from taskcache.clients.datacatalog import (
    AsyncDataCatalogClient,
    DataCatalogClient,
    open_datacatalog,
    open_datacatalog_async,
)
from taskcache.clients.embedded import AsyncEmbeddedClient, EmbeddedClient
from taskcache.clients.remote import (
    AsyncRemote,
    AsyncRemoteClient,
    RemoteClient,
    SyncRemote,
    open_remote,
    open_remote_async,
)
from taskcache.manager import AsyncCacheManager, CacheManager
from taskcache.repositories.base import AsyncRepository, Repository
from taskcache.repositories.postgres import PostgresRepository
from taskcache.repositories.postgres_async import AsyncPostgresRepository
from taskcache.repositories.sqlite import SqliteRepository
from taskcache.repositories.threaded import ThreadedRepository

# (sync, async): the public surfaces must match one to one.
TWINS: list[tuple[type, type]] = [
    (Client, AsyncClient),
    (OperatorClient, AsyncOperatorClient),
    (Repository, AsyncRepository),
    (transports.SyncTransport, transports.AsyncTransport),
    (EmbeddedClient, AsyncEmbeddedClient),
    (RemoteClient, AsyncRemoteClient),
    (SyncRemote, AsyncRemote),
    (Writes, AsyncWrites),
    (DataCatalogClient, AsyncDataCatalogClient),
    (CacheManager, AsyncCacheManager),
    (transports.ConnectTransport, transports.AsyncConnectTransport),
    (transports.GrpcTransport, transports.AsyncGrpcTransport),
]

# (implementation, protocol): every method of the protocol, with the protocol's signature.
IMPLEMENTATIONS: list[tuple[type, type]] = [
    (EmbeddedClient, Client),
    (EmbeddedClient, OperatorClient),
    (RemoteClient, Client),
    (AsyncEmbeddedClient, AsyncClient),
    (AsyncEmbeddedClient, AsyncOperatorClient),
    (AsyncRemoteClient, AsyncClient),
    (DataCatalogClient, Client),
    (AsyncDataCatalogClient, AsyncClient),
    (SqliteRepository, Repository),
    (PostgresRepository, Repository),
    (ThreadedRepository, AsyncRepository),
    (AsyncPostgresRepository, AsyncRepository),
    (transports.ConnectTransport, transports.SyncTransport),
    (transports.GrpcTransport, transports.SyncTransport),
    (transports.AsyncConnectTransport, transports.AsyncTransport),
    (transports.AsyncGrpcTransport, transports.AsyncTransport),
]

# Functions that come in pairs.
FUNCTION_TWINS: list[tuple[Callable[..., Any], Callable[..., Any]]] = [
    (open_catalog, open_async_catalog),
    (open_remote, open_remote_async),
    (open_datacatalog, open_datacatalog_async),
    (transports.open_datacatalog_transport, transports.open_async_datacatalog_transport),
    (transports.open_transport, transports.open_async_transport),
]

# Names that differ between twins by design.
_CONTEXT_SYNC = {"__enter__": "__aenter__", "__exit__": "__aexit__"}
# Methods returning an iterator: the async twin is a plain method returning an async iterator
# (``async for``), not a coroutine; parameters are the same, the return type the async one.
_ITERATORS = {"entries"}

# Parameters whose annotation differs by design: the async twin takes a coroutine function.
_ASYNC_CALLABLES = {
    ("get_or_compute", "compute"): (
        "Callable[[], Outputs]",
        "Callable[[], Awaitable[Outputs]]",
    ),
    ("serve", "read"): (
        "Callable[[Scope, str], _Row | None]",
        "Callable[[Scope, str], Awaitable[_Row | None]]",
    ),
}


def _public(cls: type) -> dict[str, Callable[..., Any]]:
    """Public methods defined on ``cls`` or its bases (not ``object``), plus context methods."""
    found: dict[str, Callable[..., Any]] = {}
    for name in dir(cls):
        if name.startswith("_") and name not in (*_CONTEXT_SYNC, *_CONTEXT_SYNC.values()):
            continue
        value = inspect.getattr_static(cls, name)
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        if inspect.isfunction(value) and getattr(object, name, None) is not value:
            found[name] = value
    return found


# The "default" of a keyword option a TypedDict declares (``**options: Unpack[...]``).
OPTIONAL = "<optional>"
REQUIRED = "<required>"


def _shape(function: Callable[..., Any]) -> list[tuple[str, Any, Any, Any]]:
    """(name, kind, default, annotation) of each parameter, then ("->", the return type);
    a ``**options: Unpack[SomeTypedDict]`` counts as the keyword-only options it declares.
    """
    signature = inspect.signature(function)
    shape: list[tuple[str, Any, Any, Any]] = []
    for name, parameter in signature.parameters.items():
        if name == "self":
            continue
        options = _unpacked(function, parameter)
        if options is None:
            annotation = _sync_annotation(function, name, parameter)
            shape.append((name, parameter.kind, parameter.default, annotation))
            continue
        for option, annotation in options.__annotations__.items():
            default = OPTIONAL if option in options.__optional_keys__ else REQUIRED
            shape.append((option, inspect.Parameter.KEYWORD_ONLY, default, annotation))
    shape.append(("->", None, None, signature.return_annotation))
    return shape


def _unpacked(function: Callable[..., Any], parameter: inspect.Parameter) -> Any:
    """The TypedDict of a ``**name: Unpack[TypedDict]`` parameter, else None."""
    annotation = parameter.annotation
    if parameter.kind is not inspect.Parameter.VAR_KEYWORD or not isinstance(annotation, str):
        return None
    if not (annotation.startswith("Unpack[") and annotation.endswith("]")):
        return None
    options = function.__globals__[annotation.removeprefix("Unpack[").removesuffix("]")]
    assert is_typeddict(options), f"{function.__qualname__}: {annotation}"
    return options


def _sync_annotation(function: Callable[..., Any], name: str, parameter: Any) -> Any:
    """The annotation, with a by-design async difference mapped to its sync form."""
    expected = _ASYNC_CALLABLES.get((function.__name__, name))
    if expected is not None and parameter.annotation == expected[1]:
        return expected[0]
    return parameter.annotation


def _async_name(name: str) -> str:
    return _CONTEXT_SYNC.get(name, name)


@pytest.mark.parametrize(("sync", "async_"), TWINS, ids=lambda cls: cls.__name__)
def test_twins_have_the_same_public_methods(sync: type, async_: type) -> None:
    sync_names = {_async_name(name) for name in _public(sync)}
    assert sync_names == set(_public(async_))


@pytest.mark.parametrize(("sync", "async_"), TWINS, ids=lambda cls: cls.__name__)
def test_twin_methods_have_the_same_signatures_modulo_async(sync: type, async_: type) -> None:
    async_methods = _public(async_)
    for name, method in _public(sync).items():
        twin = async_methods[_async_name(name)]
        assert not inspect.iscoroutinefunction(method), f"{sync.__name__}.{name} is async"
        if twin is method:
            continue  # one shared implementation (a pure policy method): nothing can drift
        if name in _CONTEXT_SYNC:
            assert inspect.iscoroutinefunction(twin), f"{async_.__name__}.{twin.__name__}"
            continue
        # pool_stats reads counters, no I/O: synchronous on both.
        expects_coroutine = name not in {"pool_stats", *_ITERATORS}
        assert inspect.iscoroutinefunction(twin) is expects_coroutine, f"{async_.__name__}.{name}"
        assert _shape(method) == _async_shape(name, twin), f"{sync.__name__}.{name} vs twin"


def _async_shape(name: str, twin: Callable[..., Any]) -> list[tuple[str, Any, Any, Any]]:
    """``twin``'s shape as its sync twin's would read: an async iterator as an iterator."""
    shape = _shape(twin)
    if name in _ITERATORS:
        returned = shape[-1][3]
        assert returned.startswith("AsyncIterator["), f"{name} returns {returned}"
        shape[-1] = ("->", None, None, returned.removeprefix("Async"))
    return shape


@pytest.mark.parametrize(("sync", "async_"), TWINS, ids=lambda cls: cls.__name__)
def test_async_docstrings_state_or_point_at_the_sync_contract(sync: type, async_: type) -> None:
    for name, twin in _public(async_).items():
        if name in _CONTEXT_SYNC.values():
            continue
        sync_doc = inspect.getdoc(_public(sync)[name]) or ""
        doc = inspect.getdoc(twin) or ""
        assert sync_doc, f"{sync.__name__}.{name} has no docstring"
        assert doc, f"{async_.__name__}.{name} has no docstring"
        assert doc == sync_doc or f".{name}`" in doc, (
            f"{async_.__name__}.{name}: neither the contract nor a pointer to the sync twin's"
        )


@pytest.mark.parametrize(
    ("implementation", "protocol"), IMPLEMENTATIONS, ids=lambda cls: cls.__name__
)
def test_implementations_match_their_protocol(implementation: type, protocol: type) -> None:
    methods = _public(implementation)
    for name, declared in _public(protocol).items():
        assert name in methods, f"{implementation.__name__} lacks {name}"
        method = methods[name]
        assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(declared), name
        if name in (*_CONTEXT_SYNC, *_CONTEXT_SYNC.values()):
            continue
        parameters = [shape[:2] for shape in _shape(method)]
        assert parameters == [shape[:2] for shape in _shape(declared)], (
            f"{implementation.__name__}.{name} does not take {protocol.__name__}'s parameters"
        )


@pytest.mark.parametrize(("sync", "async_"), FUNCTION_TWINS, ids=lambda f: f.__name__)
def test_function_twins_take_the_same_parameters(
    sync: Callable[..., Any], async_: Callable[..., Any]
) -> None:
    assert not inspect.iscoroutinefunction(sync)
    sync_parameters = [shape[:3] for shape in _shape(sync)][:-1]
    async_parameters = [shape[:3] for shape in _shape(async_)][:-1]
    assert sync_parameters == async_parameters


def test_the_check_notices_a_drifted_twin() -> None:
    class Sync:
        def get(self, key: str, timeout: float = 1.0) -> int:
            """Return it."""
            return 0

    class Async:
        async def get(self, key: str) -> int:
            """See :meth:`Sync.get`."""
            return 0

    assert _shape(Sync.get) != _shape(Async.get)
    assert set(_public(Sync)) == {"get"}


class _Options(TypedDict, total=False):
    ttl: float
    timeout: float


class _FewerOptions(TypedDict, total=False):
    ttl: float


def test_the_check_notices_drifted_keyword_options() -> None:
    class Sync:
        def put(self, key: str, **options: Unpack[_Options]) -> int:
            """Store it."""
            return 0

    class Async:
        async def put(self, key: str, **options: Unpack[_FewerOptions]) -> int:
            """See :meth:`Sync.put`."""
            return 0

    assert [shape[0] for shape in _shape(Sync.put)] == ["key", "ttl", "timeout", "->"]
    assert _shape(Sync.put) != _shape(Async.put)


@pytest.mark.parametrize("protocol", [Client, AsyncClient], ids=lambda cls: cls.__name__)
def test_put_and_update_take_ttl_and_timeout_as_optional_keywords(protocol: type) -> None:
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    keyword = inspect.Parameter.KEYWORD_ONLY
    empty = inspect.Parameter.empty
    for name in ("put", "update"):
        parameters = [shape[:3] for shape in _shape(getattr(protocol, name))][:-1]
        assert parameters == [
            ("key", positional, empty),
            ("outputs", positional, empty),
            ("metadata", positional, None),
            ("ttl", keyword, OPTIONAL),
            ("timeout", keyword, OPTIONAL),
        ], name
