"""Migration operations that change a busy PostgreSQL table without holding it locked for long.

On PostgreSQL, indexes and unique constraints are built and dropped CONCURRENTLY (reads and
writes go on), and the statements that must take the table's ACCESS EXCLUSIVE lock for a moment
(adding a column, attaching a constraint) run with a short `lock_timeout`, retried: a statement
that queued behind a long transaction (a report, a pg_dump) would make every query on the table
queue behind it, however quick the statement itself. Elsewhere (SQLite) each operation is the
plain Django one. A migration using them sets `atomic = False`: CONCURRENTLY cannot run inside a
transaction, and a lock taken inside one is held until the whole migration ends.

A failed concurrent build leaves an INVALID index behind, which writes keep updating (and a
unique one keeps enforcing); each operation here drops such a leftover first, so rerunning
`migrate` after a failure (a cancel, a lock timeout, a duplicate) finishes the job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from django.contrib.postgres import operations as postgres_operations
from django.db import NotSupportedError, OperationalError, models, transaction
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.backends.ddl_references import Statement
from django.db.migrations import AddConstraint, RemoveConstraint
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState

logger = logging.getLogger(__name__)

# Long enough for a catalog change behind the usual sub-second transactions, short enough that
# the queries queued behind the waiting statement barely notice; then it steps aside and retries.
LOCK_TIMEOUT_MS = 1000
LOCK_ATTEMPTS = 12
LOCK_RETRY_PAUSES_S = (0.5, 1, 2, 4, 8, 10)
LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of "canceling statement due to lock timeout"


def is_postgresql(schema_editor: BaseDatabaseSchemaEditor) -> bool:
    return schema_editor.connection.vendor == "postgresql"


def run_with_lock_timeout(
    schema_editor: BaseDatabaseSchemaEditor, work: Callable[[], None], *, what: str = "a migration step"
) -> None:
    """Runs `work` in a transaction of its own. On PostgreSQL its statements wait at most
    LOCK_TIMEOUT_MS for a lock; on a timeout the transaction is rolled back, which lets the
    queries queued behind it through, and `work` runs again after a pause, up to LOCK_ATTEMPTS
    times. Inside an atomic migration it gets one attempt (a savepoint): waiting to retry there
    would hold every lock the migration has taken so far."""
    connection = schema_editor.connection
    if not is_postgresql(schema_editor):
        with transaction.atomic(using=connection.alias):
            _run_with_deferred_sql(schema_editor, work)
        return
    if schema_editor.collect_sql:  # sqlmigrate: one attempt, as psql would run it
        begin, end = ([], []) if connection.in_atomic_block else (["BEGIN"], ["COMMIT"])
        for sql in begin:
            schema_editor.execute(sql)
        schema_editor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
        _run_with_deferred_sql(schema_editor, work)
        for sql in end:
            schema_editor.execute(sql)
        return
    attempts = 1 if connection.in_atomic_block else LOCK_ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic(using=connection.alias), _local_setting(connection, "lock_timeout", f"{LOCK_TIMEOUT_MS}ms"):
                _run_with_deferred_sql(schema_editor, work)
            return
        except OperationalError as error:
            if not is_lock_timeout(error) or attempt == attempts:
                raise
            pause = LOCK_RETRY_PAUSES_S[min(attempt, len(LOCK_RETRY_PAUSES_S)) - 1]
            logger.warning(
                "%s gave way after waiting %d ms for a lock (attempt %d of %d); again in %s s",
                what,
                LOCK_TIMEOUT_MS,
                attempt,
                attempts,
                pause,
            )
            time.sleep(pause)


def is_lock_timeout(error: BaseException) -> bool:
    cause = error.__cause__
    return LOCK_NOT_AVAILABLE in (getattr(cause, "sqlstate", None), getattr(cause, "pgcode", None))


def _run_with_deferred_sql(schema_editor: BaseDatabaseSchemaEditor, work: Callable[[], None]) -> None:
    """What `work` defers (Django runs deferred SQL when the migration ends, outside any
    timeout) runs here, in the same transaction."""
    already_deferred = len(schema_editor.deferred_sql)
    try:
        work()
        deferred = schema_editor.deferred_sql[already_deferred:]
    finally:
        del schema_editor.deferred_sql[already_deferred:]
    for sql in deferred:
        schema_editor.execute(sql)


@contextmanager
def _local_setting(connection: Any, name: str, value: str) -> Iterator[None]:
    """SET LOCAL, put back afterwards: inside an atomic migration the transaction goes on."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s), set_config(%s, %s, true)", [name, name, value])
        [(previous, _)] = cursor.fetchall()
    yield
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, %s, true)", [name, previous])


@contextmanager
def without_timeouts(schema_editor: BaseDatabaseSchemaEditor) -> Iterator[None]:
    """For statements whose waiting blocks no one. A concurrent build (or VALIDATE CONSTRAINT)
    takes only a SHARE UPDATE EXCLUSIVE lock, which no read or write waits for, and then waits
    for the transactions older than it. A lock_timeout or a role's statement_timeout would only
    cancel it halfway (an INVALID index, and the same failure on every rerun)."""
    if schema_editor.collect_sql:
        yield
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
        [(lock_timeout, statement_timeout)] = cursor.fetchall()
        cursor.execute("SELECT set_config('lock_timeout', '0', false), set_config('statement_timeout', '0', false)")
    try:
        yield
    finally:
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                [lock_timeout, statement_timeout],
            )


def _refuse_transaction(schema_editor: BaseDatabaseSchemaEditor, operation: object) -> None:
    # On every database, so that a migration missing `atomic = False` fails in the SQLite pass
    # too, not first in production.
    if schema_editor.connection.in_atomic_block and not schema_editor.collect_sql:
        raise NotSupportedError(
            f"{type(operation).__name__} cannot run inside a transaction (set atomic = False on the migration)."
        )


# --- indexes ------------------------------------------------------------------------------------


def add_index_concurrently(schema_editor: BaseDatabaseSchemaEditor, model: type[models.Model], index: models.Index) -> None:
    if not is_postgresql(schema_editor):
        schema_editor.add_index(model, index)
        return
    with without_timeouts(schema_editor):
        # What a failed build of this index left behind, if anything.
        schema_editor.execute(index.remove_sql(model, schema_editor, concurrently=True))
        schema_editor.execute(index.create_sql(model, schema_editor, concurrently=True), params=None)


def remove_index_concurrently(schema_editor: BaseDatabaseSchemaEditor, model: type[models.Model], index: models.Index) -> None:
    if not is_postgresql(schema_editor):
        schema_editor.remove_index(model, index)
        return
    with without_timeouts(schema_editor):
        schema_editor.execute(index.remove_sql(model, schema_editor, concurrently=True))  # IF EXISTS: rerunnable


class AddIndexConcurrently(postgres_operations.AddIndexConcurrently):
    """AddIndex, with CREATE INDEX CONCURRENTLY on PostgreSQL."""

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        _refuse_transaction(schema_editor, self)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            add_index_concurrently(schema_editor, model, self.index)

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        _refuse_transaction(schema_editor, self)
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            remove_index_concurrently(schema_editor, model, self.index)


class RemoveIndexConcurrently(postgres_operations.RemoveIndexConcurrently):
    """RemoveIndex, with DROP INDEX CONCURRENTLY on PostgreSQL."""

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        _refuse_transaction(schema_editor, self)
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            index = from_state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
            remove_index_concurrently(schema_editor, model, index)

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        _refuse_transaction(schema_editor, self)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            index = to_state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
            add_index_concurrently(schema_editor, model, index)


# --- unique constraints -------------------------------------------------------------------------


def add_unique_constraint_concurrently(
    schema_editor: BaseDatabaseSchemaEditor, model: type[models.Model], constraint: models.UniqueConstraint
) -> None:
    """The unique index is built CONCURRENTLY; a plain UNIQUE (columns) constraint then takes it
    over (ADD CONSTRAINT ... USING INDEX: a catalog change, no scan). A conditional one (or one
    with expressions, INCLUDE or opclasses) is the index itself, as Django makes it."""
    if not is_postgresql(schema_editor):
        schema_editor.add_constraint(model, constraint)
        return
    # django-stubs type create_sql as str; a UniqueConstraint's is a Statement.
    statement = cast(Statement, constraint.create_sql(model, schema_editor))
    if statement.template == schema_editor.sql_create_unique_index:
        index = Statement(_concurrently(statement.template), **statement.parts)
        with without_timeouts(schema_editor):
            schema_editor.execute(_drop_index_concurrently(schema_editor, constraint.name))
            schema_editor.execute(index, params=None)
        return
    if statement.template != schema_editor.sql_create_unique:
        raise NotSupportedError(f"no concurrent form of {statement.template!r} (Django changed underneath?)")
    if _constraint_exists(schema_editor, model, constraint.name):
        return  # taken over by an earlier run that failed later on
    index = Statement("CREATE UNIQUE INDEX CONCURRENTLY %(name)s ON %(table)s (%(columns)s)%(nulls_distinct)s", **statement.parts)
    with without_timeouts(schema_editor):
        schema_editor.execute(_drop_index_concurrently(schema_editor, constraint.name))
        schema_editor.execute(index, params=None)
    take_over = Statement(
        "ALTER TABLE %(table)s ADD CONSTRAINT %(name)s UNIQUE USING INDEX %(name)s%(deferrable)s", **statement.parts
    )
    run_with_lock_timeout(
        schema_editor, lambda: schema_editor.execute(take_over, params=None), what=f"Attaching constraint {constraint.name}"
    )


def remove_unique_constraint_concurrently(
    schema_editor: BaseDatabaseSchemaEditor, model: type[models.Model], constraint: models.UniqueConstraint
) -> None:
    if not is_postgresql(schema_editor):
        schema_editor.remove_constraint(model, constraint)
        return
    statement = cast(Statement, constraint.remove_sql(model, schema_editor))  # as create_sql
    if statement.template == schema_editor.sql_delete_index:  # the constraint is an index
        with without_timeouts(schema_editor):
            schema_editor.execute(_drop_index_concurrently(schema_editor, constraint.name))
        return
    # Dropping a constraint is a catalog change, but needs the table's ACCESS EXCLUSIVE lock.
    drop = (
        f"ALTER TABLE {schema_editor.quote_name(model._meta.db_table)} DROP CONSTRAINT IF EXISTS "
        f"{schema_editor.quote_name(constraint.name)}"
    )
    run_with_lock_timeout(schema_editor, lambda: schema_editor.execute(drop), what=f"Dropping constraint {constraint.name}")


def _concurrently(template: str) -> str:
    prefix = "CREATE UNIQUE INDEX "
    if not template.startswith(prefix):
        raise NotSupportedError(f"no concurrent form of {template!r} (Django changed underneath?)")
    return "CREATE UNIQUE INDEX CONCURRENTLY " + template[len(prefix) :]


def _drop_index_concurrently(schema_editor: BaseDatabaseSchemaEditor, name: str) -> str:
    return f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(name)}"


def _constraint_exists(schema_editor: BaseDatabaseSchemaEditor, model: type[models.Model], name: str) -> bool:
    if schema_editor.collect_sql:
        return False
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
            [schema_editor.quote_name(model._meta.db_table), name],
        )
        return cursor.fetchone() is not None


class AddConstraintConcurrently(AddConstraint):
    """AddConstraint for a UniqueConstraint, its index built CONCURRENTLY on PostgreSQL."""

    atomic = False

    def __init__(self, model_name: str, constraint: models.UniqueConstraint) -> None:
        if not isinstance(constraint, models.UniqueConstraint):
            raise TypeError(f"{type(self).__name__} takes a UniqueConstraint, not {type(constraint).__name__}")
        super().__init__(model_name, constraint)

    def describe(self) -> str:
        return f"Concurrently create constraint {self.constraint.name} on model {self.model_name}"

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        _refuse_transaction(schema_editor, self)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            add_unique_constraint_concurrently(schema_editor, model, _unique(self.constraint))

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        _refuse_transaction(schema_editor, self)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            remove_unique_constraint_concurrently(schema_editor, model, _unique(self.constraint))


class RemoveConstraintConcurrently(RemoveConstraint):
    """RemoveConstraint for a UniqueConstraint: DROP INDEX CONCURRENTLY when it is an index."""

    atomic = False

    def describe(self) -> str:
        return f"Concurrently remove constraint {self.name} from model {self.model_name}"

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        _refuse_transaction(schema_editor, self)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            constraint = from_state.models[app_label, self.model_name_lower].get_constraint_by_name(self.name)
            remove_unique_constraint_concurrently(schema_editor, model, _unique(constraint))

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        _refuse_transaction(schema_editor, self)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            constraint = to_state.models[app_label, self.model_name_lower].get_constraint_by_name(self.name)
            add_unique_constraint_concurrently(schema_editor, model, _unique(constraint))


def _unique(constraint: models.BaseConstraint) -> models.UniqueConstraint:
    if not isinstance(constraint, models.UniqueConstraint):
        raise TypeError(f"The concurrent constraint operations handle UniqueConstraints, not {type(constraint).__name__}")
    return constraint


# --- everything else ----------------------------------------------------------------------------


class WithLockTimeout(Operation):
    """Runs ordinary operations (AddField, RemoveField, RenameField, AlterField that changes no
    type, RunPython ...) each in a transaction of its own, through run_with_lock_timeout.

    Only for statements that hold their lock for a moment: one that rewrites or scans the table
    (a type change, a NOT NULL or constraint on existing rows, CREATE INDEX) would still block
    everything for its whole run, lock_timeout or not.
    """

    serialization_expand_args = ["operations"]

    def __init__(self, operations: Sequence[Operation]) -> None:
        self.operations = list(operations)

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (self.__class__.__qualname__, [self.operations], {})

    @property
    def reversible(self) -> bool:  # type: ignore[override]
        return all(operation.reversible for operation in self.operations)

    @property
    def reduces_to_sql(self) -> bool:  # type: ignore[override]
        return all(operation.reduces_to_sql for operation in self.operations)

    def describe(self) -> str:
        return "With a lock timeout: " + "; ".join(operation.describe() for operation in self.operations)

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        for operation in self.operations:
            operation.state_forwards(app_label, state)

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        for operation in self.operations:
            to_state = from_state.clone()
            operation.state_forwards(app_label, to_state)
            run_with_lock_timeout(
                schema_editor, _forwards(operation, app_label, schema_editor, from_state, to_state), what=operation.describe()
            )
            from_state = to_state

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        states = [to_state]
        for operation in self.operations[:-1]:
            states.append(states[-1].clone())
            operation.state_forwards(app_label, states[-1])
        for operation, before in zip(reversed(self.operations), reversed(states), strict=True):
            run_with_lock_timeout(
                schema_editor,
                _backwards(operation, app_label, schema_editor, from_state, before),
                what=f"Reversing: {operation.describe()}",
            )
            from_state = before


def _forwards(
    operation: Operation, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
) -> Callable[[], None]:
    return lambda: operation.database_forwards(app_label, schema_editor, from_state, to_state)


def _backwards(
    operation: Operation, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
) -> Callable[[], None]:
    return lambda: operation.database_backwards(app_label, schema_editor, from_state, to_state)


class AddCheckConstraintNotValid(AddConstraint):
    """AddConstraint for a CheckConstraint. On PostgreSQL: added NOT VALID (a moment's lock,
    under the lock timeout; new writes are checked from then on), then validated, a scan that
    blocks no read or write. Elsewhere: the plain AddConstraint, in a transaction of its own."""

    atomic = False

    def __init__(self, model_name: str, constraint: models.CheckConstraint) -> None:
        if not isinstance(constraint, models.CheckConstraint):
            raise TypeError(f"{type(self).__name__} takes a CheckConstraint, not {type(constraint).__name__}")
        super().__init__(model_name, constraint)

    def describe(self) -> str:
        return f"Create constraint {self.constraint.name} on model {self.model_name}, validated without a lock"

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        _refuse_transaction(schema_editor, self)
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if not is_postgresql(schema_editor):
            run_with_lock_timeout(schema_editor, lambda: schema_editor.add_constraint(model, self.constraint), what=self.describe())
            return
        table = schema_editor.quote_name(model._meta.db_table)
        name = schema_editor.quote_name(self.constraint.name)
        if not _constraint_exists(schema_editor, model, self.constraint.name):  # a rerun after a failed VALIDATE
            statement = str(self.constraint.create_sql(model, schema_editor)) + " NOT VALID"
            run_with_lock_timeout(schema_editor, lambda: schema_editor.execute(statement), what=self.describe())
        with without_timeouts(schema_editor):
            schema_editor.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        _refuse_transaction(schema_editor, self)
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            run_with_lock_timeout(
                schema_editor,
                lambda: schema_editor.remove_constraint(model, self.constraint),
                what=f"Remove constraint {self.constraint.name}",
            )
