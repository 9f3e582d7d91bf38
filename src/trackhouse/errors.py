"""The one exception tree of trackhouse.

::

    TrackhouseError
    ├── RequestError              the client's request cannot be served as sent (4xx)
    │   ├── PayloadError          undecodable body: bad gzip/base64/JSON/UTF-8, empty data (400)
    │   ├── PayloadTooLarge       body, decompressed body or event count over a limit (413)
    │   ├── Unauthorized          missing or wrong credentials (401)
    │   ├── RateLimited           a project's events-per-second budget is spent (429)
    │   ├── BadCallback           a JSONP callback name that is not a plain JS member path (400)
    │   ├── NotFound              unknown path (404)
    │   └── MethodNotAllowed      known path, wrong method (405)
    ├── Unavailable               we cannot take data right now; retry later (503)
    ├── JournalError              the journal could not write, sync or read a segment
    ├── StorageError              the store failed (driver errors are wrapped into this)
    ├── ProjectError              project registry: unknown project, duplicate token/id...
    └── ConfigError               a setting has an invalid value

Rejections of single events are *not* exceptions: validation returns them as
values (``trackhouse.ingest.validate.Rejection``) so one bad event never spoils its
batch. Foreign exceptions (duckdb, sqlite3, OSError) are translated at the module that
calls the foreign library, with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import Any


class TrackhouseError(Exception):
    """Base of every error trackhouse raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross the pipe of an ingest worker as pickles. Exception's own reduce
        # calls __init__ with the positional args only, which fails for the errors with
        # keyword-only fields (RateLimited's retry_after): rebuild without __init__.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(
    cls: type[TrackhouseError], args: tuple[Any, ...], state: dict[str, Any]
) -> TrackhouseError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class RequestError(TrackhouseError):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PayloadError(RequestError):
    status = 400


class PayloadTooLarge(RequestError):
    status = 413

    def __init__(self, message: str, *, limit: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit


class Unauthorized(RequestError):
    status = 401


class RateLimited(RequestError):
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadCallback(RequestError):
    status = 400


class NotFound(RequestError):
    status = 404


class MethodNotAllowed(RequestError):
    status = 405


class Unavailable(TrackhouseError):
    status = 503

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class JournalError(TrackhouseError):
    pass


class StorageError(TrackhouseError):
    pass


class ProjectError(TrackhouseError):
    pass


class ConfigError(TrackhouseError):
    pass
