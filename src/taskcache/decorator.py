"""``@taskcache.cached``: memoize plain Python functions in a catalog, computing once across
processes and machines.

A call becomes the Flyte 2 cache key of a task (identifier from the function's module and
qualified name, typed interface from its signature and type hints, inputs from the bound
arguments converted by :mod:`taskcache.values`), and the call goes through the client's
``get_or_compute``: a hit returns the stored value, a miss computes under the key's
reservation while identical calls wait. This module owns the mapping from a function call to
a key and from a return value to outputs; it must not decide cache policy (the manager does)
nor convert values itself (:mod:`taskcache.values` does).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import os
import textwrap
import threading
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Generic,
    ParamSpec,
    Self,
    TypedDict,
    TypeVar,
    Unpack,
    cast,
    overload,
)

from flyteidl2.core import identifier_pb2, interface_pb2, literals_pb2

from taskcache import hashing, values
from taskcache.clients.base import AsyncClient, Client, ComputeOptions, optional_ttl
from taskcache.clients.compute_once import DEFAULT_HEARTBEAT
from taskcache.environment import EnvironmentReader
from taskcache.errors import NotFoundError
from taskcache.home import HOME_ENVIRONMENT_VARIABLE
from taskcache.keywords import check_names
from taskcache.model import Key
from taskcache.storage import BlobStore

if TYPE_CHECKING:
    # Bound at run time by the first AsyncCachedFunction (see there).
    import asyncio

_P = ParamSpec("_P")
_R = TypeVar("_R")

TARGET_ENVIRONMENT_VARIABLE: Final = "TASKCACHE_TARGET"
SCOPE_ENVIRONMENT_VARIABLES: Final = ("TASKCACHE_ORG", "TASKCACHE_PROJECT", "TASKCACHE_DOMAIN")
# The scope of a call when neither the options nor the environment name one: non-empty, as a
# Flyte 2 cache service requires.
DEFAULT_SCOPE: Final = ("taskcache", "default", "development")
OUTPUT_NAME: Final = "o0"
_RECEIVERS: Final = ("self", "cls")

Catalog = Client | AsyncClient | str | os.PathLike[str] | None


class CachedOptions(TypedDict, total=False):
    """The options of :func:`cached` (see there)."""

    version: str | None
    catalog: Catalog
    ignore: Iterable[str]
    serialize: bool
    max_age: timedelta | None
    ttl: timedelta | float | None
    heartbeat: timedelta
    wait_timeout: timedelta | None
    org: str | None
    project: str | None
    domain: str | None
    name: str | None
    pickle: bool


@dataclass(frozen=True)
class _Options:
    version: str | None
    catalog: Catalog
    ignore: frozenset[str]
    serialize: bool
    max_age: timedelta | None
    ttl: timedelta | None
    heartbeat: timedelta
    wait_timeout: timedelta | None
    scope: tuple[str | None, str | None, str | None]
    name: str | None
    pickle: bool
    # Whether ``catalog``, a client object, is asynchronous (None for a target): a client's
    # kind does not change, so it is looked up once instead of on every call.
    catalog_is_async: bool | None = None

    def compute_options(self) -> ComputeOptions:
        """Return the ``get_or_compute`` options a miss passes (sync and async alike)."""
        return {
            "serialize": self.serialize,
            "heartbeat": self.heartbeat,
            "wait_timeout": self.wait_timeout,
            "ttl": self.ttl,
        }


# Arguments of these exact types are immutable and decide their literal by value, so calls
# with equal ones have equal keys (see _Signature.remembered_key). Strings and bytes only up to
# this length: a remembered key keeps its arguments alive.
_PLAIN_SCALARS: Final = frozenset({int, bool, float, type(None)})
_MAX_REMEMBERED_LENGTH: Final = 1024
# Keys remembered per function; the oldest is dropped first beyond this.
MAX_REMEMBERED_KEYS: Final = 1024
# Interfaces kept per function (one per set of input types); past this many, they start over.
_MAX_SHAPES: Final = 256


@dataclass(frozen=True)
class _Shape:
    """What the keys of calls with one set of input types share: the typed interface and its
    signature hash (the middle of the cache key).
    """

    interface: interface_pb2.TypedInterface
    signature: str


class _Signature:
    """How calls of one function become keys: its parameters, hints, identity and version.

    The parts of a key that do not depend on the argument values are computed once: the
    identifier and its hash per scope, the typed interface and its hash per set of input
    types (and converter-registry version). Keys of calls whose arguments are plain scalars
    (None, bool, int, float, str, bytes) are remembered whole, per scope and registry
    version, up to :data:`MAX_REMEMBERED_KEYS` per function.
    """

    def __init__(self, function: Callable[..., Any], options: _Options) -> None:
        self.function = function
        self.signature = inspect.signature(function)
        self.hints = _type_hints(function)
        parameters = list(self.signature.parameters)
        self.receiver = parameters[0] if parameters and parameters[0] in _RECEIVERS else None
        unknown = options.ignore - set(parameters)
        if unknown:
            raise TypeError(
                f"ignore names no parameter of {function.__qualname__}: {sorted(unknown)}"
            )
        self.ignore = options.ignore
        # The parameters that take no part in the key.
        self.excluded = options.ignore | ({self.receiver} if self.receiver else set())
        self.name = options.name or f"{function.__module__}.{function.__qualname__}"
        self.version = options.version or source_version(function)
        self.options = options
        self.return_type: Any = self.hints.get("return", inspect.Signature.empty)
        self.kinds = {name: given.kind for name, given in self.signature.parameters.items()}
        # With one positional argument per parameter, all positional, binding is zipping: the
        # fast path in arguments() skips inspect's general binding (same arguments, same order).
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self.positional = all(kind in positional for kind in self.kinds.values())
        # On that path, the positions of the arguments that take part in the key.
        self._keyed_positions = tuple(
            index for index, name in enumerate(self.kinds) if name not in self.excluded
        )
        self._all_keyed = len(self._keyed_positions) == len(self.kinds)
        # The scope variables to read from the environment on each call (the others are given).
        self._scope_lookups = tuple(
            (index, variable, default)
            for index, (given, variable, default) in enumerate(
                zip(options.scope, SCOPE_ENVIRONMENT_VARIABLES, DEFAULT_SCOPE, strict=True)
            )
            if not given
        )
        self._scope_environment = EnvironmentReader(
            tuple(variable for _, variable, _ in self._scope_lookups)
        )
        # (the environment read, the scope derived from it): while the read returns the same
        # tuple, nothing changed and the scope is reused. Replaced whole (thread-safe).
        self._last_scope: tuple[tuple[str | None, ...], tuple[str, ...]] | None = None
        # Shared by the keys of every call, as nothing writes to a key's identifier or
        # interface; a race only computes an equal value twice.
        self._identities: dict[tuple[str, ...], tuple[identifier_pb2.Identifier, str]] = {}
        self._shapes: dict[tuple[object, ...], _Shape] = {}
        # Remembered keys hold no inputs; a client reads only their key string and parts, and
        # nothing writes to a Key, so one object serves every call with those arguments.
        self._remembered: dict[tuple[object, ...], Key] = {}

    def scope(self) -> tuple[str, ...]:
        """Return the (org, project, domain) of a call now: given, else from the environment,
        else the default.
        """
        found = self._scope_environment.read()
        last = self._last_scope
        if last is not None and last[0] is found:
            return last[1]
        scope = [given or "" for given in self.options.scope]
        for (index, _, default), value in zip(self._scope_lookups, found, strict=True):
            scope[index] = value or default
        derived = tuple(scope)
        self._last_scope = (found, derived)
        return derived

    def identity(self, scope: tuple[str, ...]) -> tuple[identifier_pb2.Identifier, str]:
        """Return the task Identifier of ``scope`` and its hash (the key's first part)."""
        identity = self._identities.get(scope)
        if identity is None:
            org, project, domain = scope
            identifier = identifier_pb2.Identifier(
                resource_type=identifier_pb2.TASK,
                org=org,
                project=project,
                domain=domain,
                name=self.name,
                version=self.version,
            )
            identity = (identifier, hashing.hash_identifier_except_version(identifier))
            self._identities[scope] = identity
        return identity

    def arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return the call's arguments by parameter name, defaults applied; TypeError if they
        do not bind.
        """
        if self.positional and not kwargs and len(args) == len(self.kinds):
            return dict(zip(self.kinds, args, strict=True))
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments

    def key(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Key:
        """Return the key of the call ``function(*args, **kwargs)``; TypeError naming the
        parameter whose value has no converter, or if the arguments do not bind.
        """
        scope = self.scope()
        memo_key = self._memo_key(self._keyed_values(args, kwargs), scope)
        found = self._recall(memo_key)
        if found is not None:
            return found
        return self._build(self.arguments(args, kwargs), scope, memo_key)

    def remembered_key(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Key | None:
        """Return the key of this call if it is remembered (no conversion, no hashing), else
        None; TypeError if the arguments do not bind.
        """
        scope = self.scope()
        return self._recall(self._memo_key(self._keyed_values(args, kwargs), scope))

    def _keyed_values(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Sequence[Any]:
        """Return the values of the parameters that take part in the key, in parameter order
        (as :meth:`arguments` orders them, so both ways of passing one give the same values);
        TypeError if the arguments do not bind.
        """
        if self.positional and not kwargs and len(args) == len(self.kinds):
            # Binding is zipping (see __init__): no name look-ups for the remembered hit.
            return args if self._all_keyed else [args[index] for index in self._keyed_positions]
        excluded = self.excluded
        return [
            value for name, value in self.arguments(args, kwargs).items() if name not in excluded
        ]

    def _memo_key(self, keyed: Sequence[Any], scope: tuple[str, ...]) -> tuple[object, ...] | None:
        """Return what identifies this call's key among remembered ones, or None if an
        argument is not a plain scalar (its key is not remembered).
        """
        for value in keyed:
            kind = type(value)
            if kind is str or kind is bytes:
                if len(value) > _MAX_REMEMBERED_LENGTH:
                    return None
            elif kind not in _PLAIN_SCALARS:
                return None
        # The types apart from the values: 1, True and 1.0 are equal but convert differently.
        kinds = tuple(map(type, keyed))
        if float in kinds:
            # By its bits: 0.0 == -0.0 (and NaN != NaN), but their literals differ.
            keyed = [value.hex() if type(value) is float else value for value in keyed]
        return (scope, values.registry_version(), kinds, tuple(keyed))

    def _recall(self, memo_key: tuple[object, ...] | None) -> Key | None:
        return None if memo_key is None else self._remembered.get(memo_key)

    def _build(
        self,
        arguments: Mapping[str, Any],
        scope: tuple[str, ...],
        memo_key: tuple[object, ...] | None,
    ) -> Key:
        literals: dict[str, literals_pb2.Literal] = {}
        input_types: list[Any] = []
        for name, given in arguments.items():
            if name in self.excluded:
                continue
            kind = self.kinds[name]
            # *args is a list input, like any other sequence.
            value = list(given) if kind is inspect.Parameter.VAR_POSITIONAL else given
            python_type = self._input_type(name, kind, value)
            try:
                literals[name] = values.to_literal(value, python_type)
            except values.NoConverterError as error:
                raise self._no_converter(name, error) from error
            input_types.append(python_type)
        shape = self._shape(tuple(literals), tuple(input_types))
        identifier, identifier_hash = self.identity(scope)
        inputs = literals_pb2.LiteralMap(literals=literals)
        cache_key = hashing.compose_cache_key(
            identifier_hash, shape.signature, hashing.hash_literal_map(inputs), self.version
        )
        key = Key(identifier, self.version, shape.interface, inputs=inputs)
        key.remember_cache_key(cache_key)
        if memo_key is not None:
            # Without the inputs: the key string is all a client reads once it is remembered.
            remembered = Key(identifier, self.version, shape.interface)
            remembered.remember_cache_key(cache_key)
            self._remember(memo_key, remembered)
        return key

    def _remember(self, memo_key: tuple[object, ...], value: Key) -> None:
        remembered = self._remembered
        if len(remembered) >= MAX_REMEMBERED_KEYS:
            # Another thread may evict the same one meanwhile.
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del remembered[next(iter(remembered))]
        remembered[memo_key] = value

    def _no_converter(self, name: str, error: values.NoConverterError) -> TypeError:
        # The converter's message already names the ways out (register, ignore=).
        return TypeError(f"{self.function.__qualname__}: parameter {name!r}: {error}")

    def _shape(self, names: tuple[str, ...], input_types: tuple[Any, ...]) -> _Shape:
        """Return the interface of inputs ``names`` of ``input_types`` (and the return
        annotation), computed once per registry version.
        """
        shape_key = (values.registry_version(), names, input_types)
        try:
            shape = self._shapes.get(shape_key)
        except TypeError:  # an unhashable annotation: computed on every call
            return self._new_shape(names, input_types)
        if shape is None:
            if len(self._shapes) >= _MAX_SHAPES:  # unhinted inputs of ever new types
                self._shapes.clear()
            shape = self._shapes[shape_key] = self._new_shape(names, input_types)
        return shape

    def _new_shape(self, names: tuple[str, ...], input_types: tuple[Any, ...]) -> _Shape:
        interface = interface_pb2.TypedInterface()
        for name, python_type in zip(names, input_types, strict=True):
            try:
                variable_type = values.literal_type(python_type)
            except values.NoConverterError as error:
                raise self._no_converter(name, error) from error
            entry = interface.inputs.variables.add()
            entry.key = name
            entry.value.type.CopyFrom(variable_type)
        if self.return_type is not inspect.Signature.empty:
            with contextlib.suppress(values.NoConverterError):  # pickle=False: fails at return
                output = values.interface_variable(
                    self.return_type, pickle_fallback=self.options.pickle
                )
                entry = interface.outputs.variables.add()
                entry.key = OUTPUT_NAME
                entry.value.CopyFrom(output)
        if not interface.inputs.variables:
            interface.inputs.SetInParent()  # a function without inputs still hashes its map
        return _Shape(interface, hashing.interface_signature_hash(interface))

    def _input_type(self, name: str, kind: inspect._ParameterKind, value: Any) -> Any:
        hint = self.hints.get(name)
        if hint is None:  # unhinted: typed from the value, as Flyte types an untyped input
            return values.infer_type(value)
        if kind is inspect.Parameter.VAR_POSITIONAL:
            return list[hint]  # type: ignore[valid-type]
        if kind is inspect.Parameter.VAR_KEYWORD:
            return dict[str, hint]  # type: ignore[valid-type]
        return hint

    def outputs(self, result: Any, store: BlobStore | None) -> literals_pb2.LiteralMap:
        """Return ``result`` as the outputs map, converted by the return annotation.

        Without an annotation nothing says how to read the value back, so it is stored
        pickled (``object`` has no converter). Raises TypeError if no converter handles it and
        ``pickle=False``.
        """
        unhinted = self.return_type is inspect.Signature.empty
        if unhinted and not self.options.pickle:
            raise TypeError(
                f"{self.function.__qualname__}: pickle=False needs a return annotation "
                "taskcache can convert"
            )
        literal = values.to_literal(
            result,
            object if unhinted else self.return_type,
            store=store,
            pickle_fallback=self.options.pickle,
        )
        return literals_pb2.LiteralMap(literals={OUTPUT_NAME: literal})

    def result(self, outputs: literals_pb2.LiteralMap) -> Any:
        """Return the Python value stored in ``outputs`` (an entry's)."""
        literal = outputs.literals[OUTPUT_NAME]
        unhinted = self.return_type is inspect.Signature.empty
        return values.from_literal(literal, object if unhinted else self.return_type)


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    """Return the resolvable type hints of ``function``.

    ``typing.get_type_hints`` fails as a whole on one unresolvable name (a class local to a
    function, say); then each annotation is resolved on its own and the unresolvable ones are
    left out: those parameters are typed from their values, an unresolvable return is pickled.
    """
    try:
        return typing.get_type_hints(function)
    except (NameError, TypeError):
        pass
    hints: dict[str, Any] = {}
    namespace = getattr(function, "__globals__", {})
    for name, annotation in getattr(function, "__annotations__", {}).items():
        try:
            hints[name] = (
                eval(annotation, namespace)  # the function's own annotation text
                if isinstance(annotation, str)
                else annotation
            )
        except Exception:  # unresolvable: typed from the value instead
            continue
    return hints


def source_version(function: Callable[..., Any]) -> str:
    """Return the default cache version of ``function``: a digest of its source text (of its
    bytecode and constants when the source is unavailable), so that an edit invalidates.
    """
    try:
        text = textwrap.dedent(inspect.getsource(function)).encode()
    except (OSError, TypeError):
        code = function.__code__
        text = code.co_code + repr(code.co_consts).encode()
    return hashlib.sha256(text).hexdigest()[:32]


# --- catalogs, opened lazily and once per process ----------------------------------------------


_opened: dict[tuple[object, ...], Client | AsyncClient] = {}
_opened_lock = threading.Lock()


# What a catalog named by neither the options nor a client resolves against, read per call.
_CATALOG_ENVIRONMENT: Final = EnvironmentReader(
    (TARGET_ENVIRONMENT_VARIABLE, HOME_ENVIRONMENT_VARIABLE)
)


def _target(catalog: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    if catalog is not None:
        return catalog
    return _CATALOG_ENVIRONMENT.read()[0] or None


def _catalog_client(options: _Options, *, asynchronous: bool) -> Client | AsyncClient:
    """Return the client of ``options.catalog``: the one given, or the target's, opened once
    per process (and, for async clients, per event loop: async transports belong to it).
    """
    given = options.catalog
    if not (given is None or isinstance(given, str | os.PathLike)):
        if options.catalog_is_async is not asynchronous:
            wanted = "an AsyncClient" if asynchronous else "a Client"
            raise TypeError(f"catalog: this function needs {wanted}")
        return given
    target = _target(given)
    loop = id(asyncio.get_running_loop()) if asynchronous else None
    # Keyed by process (a forked child must not share its parent's connections) and by what
    # the target resolves against.
    cache_key = (
        os.getpid(),
        loop,
        target,
        _CATALOG_ENVIRONMENT.read()[1],
        options.max_age,
    )
    with _opened_lock:
        client = _opened.get(cache_key)
        if client is None:
            from taskcache.targets import open_async_catalog, open_catalog  # noqa: PLC0415

            opener = open_async_catalog if asynchronous else open_catalog
            client = opener(target, max_cache_age=options.max_age)
            _opened[cache_key] = client
    return client


def _is_async_client(catalog: Catalog) -> bool | None:
    if catalog is None or isinstance(catalog, str | os.PathLike):
        return None
    return inspect.iscoroutinefunction(getattr(catalog, "get", None))


def _sync_client(options: _Options) -> Client:
    if options.catalog_is_async is False:  # a Client given (checked once, at decoration)
        return cast(Client, options.catalog)
    return cast(Client, _catalog_client(options, asynchronous=False))


def _async_client(options: _Options) -> AsyncClient:
    return cast(AsyncClient, _catalog_client(options, asynchronous=True))


def _hit_outputs(client: Client, key: Key) -> literals_pb2.LiteralMap:
    """Return the outputs of the entry for ``key``; NotFoundError on a miss (as ``get``)."""
    # A client that reads a hit's outputs alone (the embedded one) skips the hit's status.
    get_outputs: Callable[[Key], literals_pb2.LiteralMap] | None = getattr(
        client, "get_outputs", None
    )
    if get_outputs is not None:
        return get_outputs(key)
    return client.get(key).outputs.read()


def _blobs(client: object) -> BlobStore | None:
    blobs = getattr(client, "blobs", None)
    return blobs if isinstance(blobs, BlobStore) else None


# --- the decorated functions ------------------------------------------------------------------


class CachedFunction(Generic[_P, _R]):
    """A memoized synchronous function: call it as the original.

    ``cache_key``, ``forget`` and ``lookup`` take the same arguments as the function.
    """

    def __init__(self, function: Callable[_P, _R], options: _Options) -> None:
        self._signature = _Signature(function, options)
        self._options = options
        functools.update_wrapper(self, function)

    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Return the stored result of this call, computing it once (across processes) on a
        miss; raises what the function raises (nothing is stored then).
        """
        key = self._signature.key(args, kwargs)
        client = _sync_client(self._options)

        def compute() -> literals_pb2.LiteralMap:
            result = self._signature.function(*args, **kwargs)
            return self._signature.outputs(result, _blobs(client))

        try:  # a hit is one get; get_or_compute (which asks again) handles a miss
            outputs = _hit_outputs(client, key)
        except NotFoundError:
            outputs = client.get_or_compute(
                key, compute, **self._options.compute_options()
            ).outputs.read()
        result: _R = self._signature.result(outputs)
        return result

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        # Decorated methods bind like functions; self/cls stays out of the key.
        return self if instance is None else BoundCachedFunction(self, instance)

    def cache_key(self, *args: _P.args, **kwargs: _P.kwargs) -> str:
        """Return the cache key of this call (computes nothing, opens no catalog)."""
        return hashing.cache_key(self._signature.key(args, kwargs))

    def forget(self, *args: _P.args, **kwargs: _P.kwargs) -> None:
        """Drop the stored result of this call; nothing happens if there is none."""
        with contextlib.suppress(NotFoundError):
            _sync_client(self._options).delete(self._signature.key(args, kwargs))

    def lookup(self, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Return the stored result of this call without computing; NotFoundError if none."""
        outputs = _hit_outputs(_sync_client(self._options), self._signature.key(args, kwargs))
        result: _R = self._signature.result(outputs)
        return result


class AsyncCachedFunction(Generic[_P, _R]):
    """A memoized ``async def`` function: await it as the original. ``cache_key`` is plain;
    ``forget`` and ``lookup`` are coroutines. Nothing here blocks the event loop.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        """Return a new instance, asyncio bound for the module (see below)."""
        # Only the async paths use asyncio: the first async function made (decorated, copied
        # or unpickled: all pass here) binds it for the module, so that sync use never pays
        # its import and no call runs an import statement.
        global asyncio  # noqa: PLW0603
        import asyncio  # noqa: PLC0415

        return super().__new__(cls)

    def __init__(self, function: Callable[_P, Awaitable[_R]], options: _Options) -> None:
        self._signature = _Signature(function, options)
        self._options = options
        functools.update_wrapper(self, function)

    async def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """See :meth:`CachedFunction.__call__` (awaits the function)."""
        # A remembered key costs less than the hop to a worker thread; a new one is built
        # there (converting arguments may read files, hash arrays).
        key = self._signature.remembered_key(args, kwargs)
        if key is None:
            key = await asyncio.to_thread(self._signature.key, args, kwargs)
        client = _async_client(self._options)

        async def compute() -> literals_pb2.LiteralMap:
            result = await self._signature.function(*args, **kwargs)
            return await asyncio.to_thread(self._signature.outputs, result, _blobs(client))

        try:  # see CachedFunction.__call__
            entry = await client.get(key)
        except NotFoundError:
            entry = await client.get_or_compute(key, compute, **self._options.compute_options())
        result: _R = await asyncio.to_thread(self._signature.result, entry.outputs.read())
        return result

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        return self if instance is None else BoundCachedFunction(self, instance)

    def cache_key(self, *args: _P.args, **kwargs: _P.kwargs) -> str:
        """Return the cache key of this call (computes nothing, opens no catalog)."""
        return hashing.cache_key(self._signature.key(args, kwargs))

    async def forget(self, *args: _P.args, **kwargs: _P.kwargs) -> None:
        """Drop the stored result of this call; nothing happens if there is none."""
        with contextlib.suppress(NotFoundError):
            await _async_client(self._options).delete(self._signature.key(args, kwargs))

    async def lookup(self, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Return the stored result of this call without computing; NotFoundError if none."""
        entry = await _async_client(self._options).get(self._signature.key(args, kwargs))
        result: _R = await asyncio.to_thread(self._signature.result, entry.outputs.read())
        return result


class BoundCachedFunction:
    """A cached method bound to its instance: the call and ``cache_key``/``forget``/``lookup``
    with the instance as first argument (it takes no part in the key).
    """

    def __init__(
        self, cached: CachedFunction[..., Any] | AsyncCachedFunction[..., Any], instance: object
    ) -> None:
        self._cached = cached
        self._instance = instance
        functools.update_wrapper(self, cached)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the cached method on the bound instance."""
        return self._cached(self._instance, *args, **kwargs)

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        """See :meth:`CachedFunction.cache_key`."""
        return self._cached.cache_key(self._instance, *args, **kwargs)

    def forget(self, *args: Any, **kwargs: Any) -> Any:
        """See :meth:`CachedFunction.forget` (a coroutine for an async method)."""
        return self._cached.forget(self._instance, *args, **kwargs)

    def lookup(self, *args: Any, **kwargs: Any) -> Any:
        """See :meth:`CachedFunction.lookup` (a coroutine for an async method)."""
        return self._cached.lookup(self._instance, *args, **kwargs)


_F = TypeVar("_F", bound=Callable[..., Any])


@overload  # an async function is also a Callable[_P, _R]: the first match wins, as intended
def cached(function: Callable[_P, Awaitable[_R]], /) -> AsyncCachedFunction[_P, _R]: ...  # type: ignore[overload-overlap]
@overload
def cached(function: Callable[_P, _R], /) -> CachedFunction[_P, _R]: ...
@overload
def cached(function: None = None, /, **options: Unpack[CachedOptions]) -> Callable[[_F], Any]: ...
def cached(function: Callable[..., Any] | None = None, /, **options: Unpack[CachedOptions]) -> Any:
    """Memoize a function in a catalog; use bare (``@cached``) or with options.

    Options: ``version`` (the cache version; default: a digest of the function's source, so
    an edit invalidates); ``catalog`` (a Client/AsyncClient, any target ``taskcache.open``
    takes, or None: ``$TASKCACHE_TARGET``, else the default embedded catalog — opened
    lazily, once per process); ``ignore`` (parameter names left out of the key);
    ``serialize`` (compute once across workers under a reservation; False: every missing
    caller computes and the first put wins); ``max_age`` (older entries miss; applies when
    the decorator opens the catalog); ``ttl`` (a timedelta or seconds: computed entries
    expire that long after they are stored; None: the catalog's default); ``heartbeat``
    (10 s) and ``wait_timeout`` (None) of ``get_or_compute``; ``org``/``project``/``domain``
    (default ``$TASKCACHE_ORG`` ... or ``taskcache``/``default``/``development``); ``name``
    (default ``module.qualname``); ``pickle`` (store return values with no converter
    pickled — trusted catalogs only; False makes them a TypeError).

    Returns a :class:`CachedFunction` (an :class:`AsyncCachedFunction` for ``async def``).
    Raises TypeError at decoration for an ``ignore`` name that is not a parameter, and at a
    call for an argument with no converter (naming the parameter). Exceptions of the
    function are never cached; a returned None is.
    """
    check_names(options, CachedOptions, "cached()")
    settings = _Options(
        version=options.get("version"),
        catalog=options.get("catalog"),
        ignore=frozenset(options.get("ignore", ())),
        serialize=options.get("serialize", True),
        max_age=options.get("max_age"),
        ttl=optional_ttl(options.get("ttl")),
        heartbeat=options.get("heartbeat", DEFAULT_HEARTBEAT),
        wait_timeout=options.get("wait_timeout"),
        scope=(options.get("org"), options.get("project"), options.get("domain")),
        name=options.get("name"),
        pickle=options.get("pickle", True),
        catalog_is_async=_is_async_client(options.get("catalog")),
    )

    def decorate(target: Callable[..., Any]) -> Any:
        if inspect.iscoroutinefunction(target):
            return AsyncCachedFunction(target, settings)
        return CachedFunction(target, settings)

    return decorate if function is None else decorate(function)
