"""The store's one exception family: callers catch StoreError, or a subclass to act on the cause."""


class StoreError(Exception):
    """Any failure of the store; the message names the database file when there is one."""

    def __init__(self, problem: str, path: str | None = None):
        super().__init__(f"{path}: {problem}" if path else problem)
        self.problem = problem
        self.path = path


class StoreCorrupt(StoreError):
    """The file is not a SQLite database, or SQLite finds it damaged. The file is left as it was."""


class StoreTooNew(StoreError):
    """The schema version is newer than this code knows: written by a newer agent."""


class StoreMissing(StoreError):
    """A read-only open found no database yet (the writer has not created or initialised it)."""


class StoreFull(StoreError):
    """The disk (or the database's page limit) is full: the write did not happen; later ones may."""


class StoreValueError(StoreError, ValueError):
    """An argument is not what the store accepts (wrong type, not JSON, non-finite number)."""
