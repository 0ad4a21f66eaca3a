"""Registry errors: all are ``UserError``s so the CLI prints one line and exits 2."""

from ufarsap_engine.errors import UserError


class RegistryError(UserError):
    """Base class for registry errors the user can act on."""


class RegistryUnavailable(RegistryError):
    """The URL cannot be parsed, its driver is missing, or the database cannot be reached."""


class SchemaOutOfDate(RegistryError):
    """The database schema is older than this engine needs (or not created yet)."""


class SchemaTooNew(RegistryError):
    """The database was migrated by a newer ufarsap-engine than this one."""


class NotARegistry(RegistryError):
    """The database has tables with the registry's names but no registry version stamp."""


class StrategyNotFound(RegistryError):
    """No strategy with the given id."""


class RunNotFound(RegistryError):
    """No run with the given id."""


class InvalidArgument(RegistryError):
    """A value passed to the registry is not valid (the message lists what is)."""


class InvalidTransition(RegistryError):
    """A lifecycle change that is not allowed (e.g. rejecting the active strategy)."""


class NoRegistry(SchemaOutOfDate):
    """The URL names a SQLite file that does not exist (reading commands never create one)."""


class RegistryBusy(RegistryError):
    """Another process held the SQLite registry's write lock for longer than the wait allowed."""
