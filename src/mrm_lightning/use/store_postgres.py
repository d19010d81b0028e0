"""The profile store in a PostgreSQL database: several ``mrm serve`` replicas, on any nodes,
serve and update the same users.

``--store postgresql://USER@HOST:PORT/DB`` (the database must exist: ``createdb DB``; the
password is best given as libpq reads it, in ``PGPASSWORD`` or ``~/.pgpass``, not in the URL,
which process lists show). Error messages name the URL without its password.

Concurrency: transactions run at READ COMMITTED, and every write to a user first takes a
transaction-scoped advisory lock on that user (``pg_advisory_xact_lock``), so two replicas
adapting one user run one after the other, the second reading what the first committed: no
acknowledged write is lost, and writers of different users never wait for each other. A
replica killed mid-transaction holds nothing: the server rolls its transaction back when the
connection drops, and releases its locks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from .store_schema import (
    StoreError,
    check_profile_columns,
    check_schema_version,
    create_judgement_tables,
    create_tables,
    missing_profiles_table,
)

URL_SCHEMES = ("postgresql://", "postgres://")
# advisory lock keys: (class, key) pairs; the class keeps mrm's locks apart from other
# applications' in a shared database
USER_LOCK_CLASS = 0x6D726D  # "mrm"
SCHEMA_LOCK_CLASS = 0x6D726E


def is_postgres_url(target: str) -> bool:
    return target.startswith(URL_SCHEMES)


# libpq's query parameters that hold a secret (``?password=...``): never shown
SECRET_PARAMETERS = ("password", "sslpassword")


def without_password(url: str) -> str:
    """The URL as messages may show it: ``postgresql://user@host:port/db``, without the
    password of the user part or of the query (``?password=...``)."""
    parts = urlsplit(url)
    query = "&".join(
        item
        for item in parts.query.split("&")
        if item and item.split("=", 1)[0].lower() not in SECRET_PARAMETERS
    )
    netloc = parts.netloc
    if "@" in netloc:  # user[:password]@hosts: keep the user, drop the password
        user, hosts = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{hosts}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def secrets_of(url: str) -> list[str]:
    """The password(s) a URL holds, as written and percent-decoded (to scrub from messages)."""
    parts, found = urlsplit(url), []
    if "@" in parts.netloc and ":" in parts.netloc.rsplit("@", 1)[0]:
        found.append(parts.netloc.rsplit("@", 1)[0].split(":", 1)[1])
    for item in parts.query.split("&"):
        key, _, value = item.partition("=")
        if key.lower() in SECRET_PARAMETERS and value:
            found.append(value)
    return [s for secret in found for s in {secret, unquote(secret)} if s]


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


@contextmanager
def store_errors(location: str, secrets: Sequence[str] = ()) -> Iterator[None]:
    """psycopg's errors as a :class:`StoreError` naming the store: the first line of the
    message, with any of ``secrets`` in it blanked (libpq echoes a URL it cannot parse)."""
    import psycopg

    try:
        yield
    except psycopg.Error as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        for secret in sorted(secrets, key=len, reverse=True):
            first = first.replace(secret, "***")
        raise StoreError(f"{location}: cannot use the profile store ({first})") from None


class PostgresBackend:
    """One connection to a store database (see :class:`mrm_lightning.use.store.StoreBackend`).
    A connection that broke (server restart, network) is opened again at the next statement
    outside a transaction."""

    def __init__(self, url: str, connect_timeout_s: int = 10) -> None:
        try:
            import psycopg
        except ImportError:
            raise StoreError(
                f"{without_password(url)}: a PostgreSQL store needs psycopg: "
                "pip install 'mrm-lightning[postgres]'"
            ) from None
        self._psycopg = psycopg
        self._url, self._timeout = url, connect_timeout_s
        self.location = without_password(url)
        self.public_name = f"postgresql database {database_name(url)}"
        self._in_transaction = False
        self._conn = self._connect()

    def _connect(self):
        with store_errors(self.location, secrets_of(self._url)):
            # autocommit: transactions are opened explicitly (`begin`), as in SQLite
            return self._psycopg.connect(self._url, autocommit=True, connect_timeout=self._timeout)

    def errors(self):
        return store_errors(self.location, secrets_of(self._url))

    def _connection(self):
        if (self._conn.closed or self._conn.broken) and not self._in_transaction:
            self._conn = self._connect()
        return self._conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        # the shared statements use ? (store_schema); none holds a literal ? or %
        return self._connection().execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, rows: list[Sequence[Any]]) -> None:
        with self._connection().cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)

    def begin(self) -> None:
        self.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        self._in_transaction = True

    def commit(self) -> None:
        self._in_transaction = False
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        self._in_transaction = False
        if not (self._conn.closed or self._conn.broken):
            self._conn.execute("ROLLBACK")

    def lock_user(self, user: str) -> None:
        """Wait until no other transaction writes ``user``; held to this transaction's end."""
        self.execute("SELECT pg_advisory_xact_lock(?, hashtext(?))", (USER_LOCK_CLASS, user))

    def prepare_schema(self) -> None:
        """Make a new store's tables or check an existing one (in a write transaction; replicas
        starting together make them once: they wait for each other on a lock)."""
        self.execute("SELECT pg_advisory_xact_lock(?, 0)", (SCHEMA_LOCK_CLASS,))
        tables = {
            row[0]
            for row in self.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )
        }
        if "store_meta" in tables:
            found = self.execute(
                "SELECT value FROM store_meta WHERE key = 'schema_version'"
            ).fetchone()
            check_schema_version(found and found[0], self.location)
            if "profiles" not in tables:
                raise missing_profiles_table(self.location)
            columns = self.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = 'profiles' ORDER BY ordinal_position"
            ).fetchall()
            check_profile_columns([row[0] for row in columns], self.location)
            create_judgement_tables(self.execute)
            return
        if "profiles" in tables:
            raise StoreError(
                f"{self.location}: not a profile store: the database has a profiles table "
                "but no store_meta (another application's?); give mrm a database of its own"
            )
        create_tables(self.execute)

    def close(self) -> None:
        self._conn.close()
