"""A file the server reads at start and re-reads on SIGHUP (the token and JWKS files).

A re-read that fails keeps the last good contents in force and logs why, so a bad edit never
locks every caller out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sized
from pathlib import Path
from typing import Generic, TypeVar

from taskcache.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

Contents = TypeVar("Contents", bound=Sized)


class ReloadableFile(Generic[Contents]):
    """The contents ``read`` returns for the file at ``path``, kept in :attr:`contents`.

    ``kind`` names the file in log lines ("token file") and ``items`` what it holds
    ("tokens"). Raises what ``read`` raises (InvalidArgumentError for an unusable file).
    """

    def __init__(
        self, path: str | Path, read: Callable[[Path], Contents], *, kind: str, items: str
    ) -> None:
        self.path = Path(path)
        self._read = read
        self._kind = kind
        self._items = items
        self.contents = read(self.path)

    def reload(self) -> bool:
        """Re-read the file; return whether its new contents are now in force."""
        try:
            self.contents = self._read(self.path)
        except InvalidArgumentError as error:
            logger.error(
                "%s not reloaded, the previous %s stay in force: %s", self._kind, self._items, error
            )
            return False
        logger.info("%s %s reloaded: %d %s", self._kind, self.path, len(self.contents), self._items)
        return True
