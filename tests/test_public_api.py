"""The public surface of ``taskcache``: exactly the intended names, each importable; and an
import graph without loops (module-level imports, type-only ones included).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from collections.abc import Iterator
from pathlib import Path

import taskcache
from taskcache import errors

# Why each name is public. Errors users catch: every error a client raises.
CAUGHT = {"CacheError", "AlreadyExistsError", "DeadlineExceededError", "FailedPreconditionError"}
CAUGHT |= {"InternalError", "InvalidArgumentError", "NotFoundError", "PermissionDeniedError"}
CAUGHT |= {"UnauthenticatedError", "UnavailableError", "ResourceExhaustedError"}
# Values users build (or implement, for the reader protocols) and pass in.
CONSTRUCTED = {"Key", "Metadata", "InputReader", "OutputReader", "ReservationCache"}
CONSTRUCTED |= {"InMemoryOutputReader", "UriOutputReader"}
# Values the client methods return.
RETURNED = {"Entry", "Status", "CacheStatus", "Reservation", "ReservationStatus"}
RETURNED |= {"CatalogEntry", "CatalogStats", "ProjectStats"}
# How users get a client, the protocols they type it with, and the version.
ENTRY_POINTS = {"open", "open_async", "cached", "values", "Client", "AsyncClient", "__version__"}
ENTRY_POINTS |= {"OperatorClient", "AsyncOperatorClient"}
INTENDED = sorted(CAUGHT | CONSTRUCTED | RETURNED | ENTRY_POINTS)


def test_all_is_the_intended_list() -> None:
    assert sorted(taskcache.__all__) == INTENDED
    assert len(set(taskcache.__all__)) == len(taskcache.__all__)


def test_every_exported_name_imports() -> None:
    namespace: dict[str, object] = {}
    exec("from taskcache import *", namespace)
    del namespace["__builtins__"]
    assert sorted(namespace) == INTENDED
    for name in INTENDED:
        assert namespace[name] is getattr(taskcache, name)


def test_every_error_class_is_exported() -> None:
    error_classes = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.CacheError)
    }
    assert error_classes == CAUGHT
    for name in error_classes:
        assert getattr(taskcache, name) is getattr(errors, name)


def test_client_classes_come_from_open_not_from_the_exports() -> None:
    # Their constructors need unexported parts (a CacheManager, a BlobStore).
    assert not hasattr(taskcache, "EmbeddedClient")
    assert not hasattr(taskcache, "AsyncEmbeddedClient")
    with taskcache.open("memory://") as client:
        assert type(client).__name__ == "EmbeddedClient"

    async def open_async_client() -> str:
        async with taskcache.open_async("memory://") as client:
            return type(client).__name__

    assert asyncio.run(open_async_client()) == "AsyncEmbeddedClient"


def test_statuses_are_one_set_of_classes_wherever_imported() -> None:
    from taskcache import model, status

    for name in ("CacheStatus", "ReservationStatus", "Status"):
        assert getattr(taskcache, name) is getattr(status, name) is getattr(model, name)


def _module_level_imports(tree: ast.Module, modules: set[str]) -> Iterator[str]:
    """The ``modules`` a module imports at import time, ``if TYPE_CHECKING:`` blocks included.

    ``from package import submodule`` imports the submodule, not the package's other names.
    """
    statements = list(tree.body)
    while statements:
        node = statements.pop()
        if isinstance(node, ast.If):
            statements.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            statements.extend(node.body + node.orelse + node.finalbody)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                yield submodule if submodule in modules else node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def _import_graph() -> dict[str, set[str]]:
    """taskcache's modules, each with the taskcache modules it imports at module level."""
    root = Path(taskcache.__file__).parent.parent
    paths = {}
    for path in root.joinpath("taskcache").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    modules = set(paths)
    return {
        name: set(_module_level_imports(ast.parse(path.read_text()), modules)) & modules - {name}
        for name, path in paths.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle of ``graph`` (as a path that ends where it starts), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(graph[module]):
            found = visit(imported, [*path, module])
            if found is not None:
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        found = visit(module, [])
        if found is not None:
            return found
    return None


def test_cycle_finder_finds_the_old_errors_model_loop() -> None:
    graph = _import_graph()
    graph["taskcache.errors"] = graph["taskcache.errors"] | {"taskcache.model"}
    cycle = _cycle(graph)
    assert cycle is not None
    assert "taskcache.errors" in cycle
    assert "taskcache.model" in cycle


def test_module_level_imports_form_no_cycle() -> None:
    graph = _import_graph()
    assert _cycle(graph) is None
    assert graph["taskcache.status"] == set()
