"""The ``Registry``: every operation is one short transaction.

Writes go through ``transactions.transact`` (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: READ
COMMITTED with retries), so many writer processes can share a PostgreSQL registry, and a
process killed mid-write leaves nothing half-written. Timestamps of runs (started, heartbeat,
ended) come from the database server's clock on PostgreSQL, so hosts with skewed clocks do
not reap each other's live runs.
"""

from __future__ import annotations

import builtins
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from . import encoding, migrate, queries
from .connection import display_url, location, redact, write_engine
from .errors import InvalidArgument, InvalidTransition, RunNotFound, StrategyNotFound
from .models import (
    LIFECYCLES,
    ORIGINS,
    RUN_STATUSES,
    STATES,
    LineageEventRow,
    Run,
    Score,
    Strategy,
    StrategyPlugin,
)
from .records import LineageEvent, StrategyRecord
from .transactions import is_missing_reference, transact

T = TypeVar("T")

STALE_REASON = "run stopped sending heartbeats"
END_STATUSES = tuple(s for s in RUN_STATUSES if s != "running")
STRATEGIES, PLUGINS, SCORES, EVENTS = (
    m.__table__ for m in (Strategy, StrategyPlugin, Score, LineageEventRow)
)
#: Largest id a strategy can have (SQLite's INTEGER; PostgreSQL's is smaller, so also covered).
MAX_ID = 2**63 - 1
#: Ids per IN (...) list, well under SQLite's and PostgreSQL's bound-parameter limits.
CHUNK = 500


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Registry:
    """A strategy registry on one database; open it with ``open_registry``."""

    def __init__(self, engine: Engine, url: str):
        self._engine = engine
        self._writer = write_engine(engine)
        self.url = url

    # -- plumbing ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"Registry({display_url(self.url)!r})"

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections (PostgreSQL keeps no idle sessions from this process)."""
        self._engine.dispose()

    @property
    def location(self) -> str:
        """Where this registry lives: its SQLite file, or its URL without the password."""
        return location(self.url)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def _write(self, work: Callable[[Session], T], *, active_conflicts: bool = False) -> T:
        return transact(self._writer, work, active_conflicts=active_conflicts)

    def _read(self, work: Callable[[Session], T]) -> T:
        return transact(self._engine, work)

    def _db_now(self) -> Any:
        """Server clock on PostgreSQL (comparable across hosts); this process's elsewhere."""
        return sa.func.now() if self.dialect == "postgresql" else _utcnow()

    def upgrade(self) -> tuple[str | None, str]:
        """Migrate this database to the newest schema; returns (old rev, new rev)."""
        return migrate.upgrade_to_head(self._engine, self.url)

    # -- runs -------------------------------------------------------------------------------

    def start_run(self, name: str, config: dict[str, Any], scope: str = "default") -> str:
        """Register a run (this process) and reap strategies of runs that died; returns its id.

        Passwords inside URLs in ``config`` are stored redacted (the registry is shared)."""
        encoding.name(name, what="run name")
        encoding.name(scope, what="scope", max_len=encoding.MAX_SCOPE)
        config = redact(encoding.json_value(config, what="run config"))
        run_id = uuid.uuid4().hex

        def work(s: Session) -> None:
            now = self._db_now()
            s.execute(
                sa.insert(Run).values(
                    id=run_id, name=name, scope=scope, status="running", config=config,
                    host=socket.gethostname()[:255], pid=os.getpid(),
                    started_at=now, heartbeat_at=now,
                )
            )

        self._write(work)
        self.reap_stale()
        return run_id

    def heartbeat(self, run_id: str) -> None:
        """Say the run is alive; runs silent for longer than ``reap_stale``'s timeout are dead."""

        def work(s: Session) -> None:
            done = s.execute(
                sa.update(Run).where(Run.id == run_id).values(heartbeat_at=self._db_now())
            )
            if done.rowcount == 0:
                raise self._run_not_found(run_id)

        self._write(work)

    def end_run(self, run_id: str, status: str) -> None:
        """Mark the run finished; its strategies still ``running`` become ``failed``."""
        encoding.choice(status, END_STATUSES, what="run status")

        def work(s: Session) -> None:
            done = s.execute(
                sa.update(Run)
                .where(Run.id == run_id)
                .values(status=status, ended_at=self._db_now(), heartbeat_at=self._db_now())
            )
            if done.rowcount == 0:
                raise self._run_not_found(run_id)
            self._fail_running(s, Strategy.run_id == run_id, f"run ended ({status})")

        self._write(work)

    def reap_stale(self, timeout_s: float = 300) -> int:
        """Fail ``running`` strategies whose run is silent for ``timeout_s`` or has ended.

        Silent runs are marked ``killed`` (ended at their last heartbeat). Returns how many
        strategies were failed.
        """
        if timeout_s < 0:
            raise InvalidArgument("timeout_s must be >= 0")

        def work(s: Session) -> int:
            cutoff = self._db_now() - timedelta(seconds=timeout_s)
            s.execute(
                sa.update(Run)
                .where(Run.status == "running", Run.heartbeat_at < cutoff)
                .values(status="killed", ended_at=Run.heartbeat_at)
            )
            dead_runs = sa.select(Run.id).where(Run.ended_at.is_not(None))
            return self._fail_running(s, Strategy.run_id.in_(dead_runs), STALE_REASON)

        return self._write(work)

    def _fail_running(self, s: Session, which: sa.ColumnElement[bool], reason: str) -> int:
        now = _utcnow()
        failed = s.execute(
            sa.update(Strategy)
            .where(Strategy.state == "running", which)
            .values(state="failed", completed_at=now, reason=reason)
            .returning(Strategy.id, Strategy.run_id)
            .execution_options(synchronize_session=False)
        ).all()
        for strategy_id, run_id in failed:
            s.add(LineageEventRow(
                strategy_id=strategy_id, event="state_changed", run_id=run_id, at=now,
                detail={"from": "running", "to": "failed", "reason": reason},
            ))
        if failed:
            s.flush()
            self._retire_failed(s, Strategy.id.in_([sid for sid, _ in failed]), reason)
        return len(failed)

    def _retire_failed(self, s: Session, which: sa.ColumnElement[bool], reason: str) -> None:
        """A failed strategy never stays active: retire it (its scope then has no active
        strategy, and runs fall back to the default set until another is activated)."""
        why = f"failed while active: {reason}" if reason else "failed while active"
        retired = s.execute(
            sa.update(Strategy)
            .where(which, Strategy.state == "failed", Strategy.lifecycle == "active")
            .values(lifecycle="retired", reason=why)
            .returning(Strategy.id, Strategy.run_id)
            .execution_options(synchronize_session="fetch")
        ).all()
        for strategy_id, run_id in retired:
            s.add(LineageEventRow(
                strategy_id=strategy_id, event="retired", run_id=run_id, at=_utcnow(),
                detail={"from": "active", "reason": why},
            ))

    # -- writing strategies -----------------------------------------------------------------

    def add_strategy(
        self,
        *,
        plugins: Iterable[str],
        params: dict[str, Any],
        origin: str,
        run_id: str | None = None,
        parent_id: int | None = None,
        generation: int | None = None,
        state: str = "candidate",
        scope: str = "default",
        reason: str = "",
    ) -> int:
        """Record a new strategy (lifecycle ``proposed``) with its plugins and a ``created`` event.

        ``generation`` defaults to the parent's + 1 (0 without a parent).
        """
        names = encoding.plugin_names(plugins)
        if not isinstance(params, dict):
            raise InvalidArgument("params must be a dict")
        params = encoding.json_value(params, what="params")
        encoding.choice(origin, ORIGINS, what="origin")
        encoding.choice(state, STATES, what="state")
        encoding.name(scope, what="scope", max_len=encoding.MAX_SCOPE)
        if generation is not None and (not isinstance(generation, int) or generation < 0):
            raise InvalidArgument("generation must be an integer >= 0")
        digest = encoding.content_hash(names, params)

        def work(s: Session) -> int:
            # Core statements: this is the hot path of evolution rounds and concurrent writers.
            conn, now, gen = s.connection(), _utcnow(), generation
            if parent_id is not None:
                parent_gen = conn.scalar(sa.select(Strategy.generation).where(Strategy.id == parent_id))
                if parent_gen is None:
                    raise self._not_found(parent_id, what="parent strategy")
                gen = parent_gen + 1 if gen is None else gen
            gen = gen or 0
            try:
                sid = conn.execute(
                    sa.insert(STRATEGIES).returning(STRATEGIES.c.id),
                    {
                        "run_id": run_id, "parent_id": parent_id, "generation": gen,
                        "origin": origin, "state": state, "lifecycle": "proposed",
                        "params": params, "content_hash": digest, "scope": scope,
                        "reason": reason or "", "created_at": now,
                        "completed_at": now if state in ("complete", "failed") else None,
                    },
                ).scalar_one()
            except exc.IntegrityError as error:  # the parent exists (above), so: no such run
                if is_missing_reference(error):
                    raise self._run_not_found(run_id) from None
                raise
            if names:
                conn.execute(
                    sa.insert(PLUGINS),
                    [{"strategy_id": sid, "plugin_name": n, "enabled": True} for n in names],
                )
            conn.execute(sa.insert(EVENTS), {
                "strategy_id": sid, "event": "created", "from_strategy_id": parent_id,
                "run_id": run_id, "at": now,
                "detail": {"origin": origin, "generation": gen, "reason": reason},
            })
            return sid

        return self._write(work)

    def set_state(self, strategy_id: int, state: str, reason: str = "") -> None:
        """Move a strategy through candidate -> running -> complete | failed."""
        encoding.choice(state, STATES, what="state")

        def work(s: Session) -> None:
            row = self._locked(s, strategy_id)
            if row.state == state:
                return
            now = _utcnow()
            detail = {"from": row.state, "to": state, "reason": reason}
            row.state = state
            row.completed_at = now if state in ("complete", "failed") else None
            if reason:
                row.reason = reason
            s.add(LineageEventRow(
                strategy_id=strategy_id, event="state_changed", run_id=row.run_id, at=now,
                detail=detail,
            ))
            if state == "failed":
                s.flush()
                self._retire_failed(s, Strategy.id == strategy_id, reason)

        self._write(work)

    def record_scores(self, strategy_id: int, scores: dict[str, float], step: int = 0) -> None:
        """Store metric values at ``step``; recording the same (metric, step) again replaces it."""
        if isinstance(step, bool) or not isinstance(step, int):
            raise InvalidArgument(f"step must be an integer, got {step!r}")
        if isinstance(strategy_id, bool) or not isinstance(strategy_id, int):
            raise InvalidArgument(f"strategy id must be an integer, got {strategy_id!r}")
        rows = []
        for metric, value in scores.items():
            encoding.name(metric, what="metric name")
            stored, kind = encoding.encode_score(value, metric=metric)
            rows.append({"metric": metric, "value": stored, "value_kind": kind})
        if not rows:
            return

        def work(s: Session) -> None:
            now = _utcnow()
            values = [{**r, "strategy_id": strategy_id, "step": step, "recorded_at": now} for r in rows]
            try:
                s.connection().execute(self._upsert_scores(values))
            except exc.IntegrityError as error:
                if is_missing_reference(error):
                    raise self._not_found(strategy_id) from None
                raise

        self._write(work)

    def _upsert_scores(self, values: list[dict[str, Any]]) -> sa.Executable:
        insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(self.dialect)
        if insert is None:  # other backends: plain insert, duplicates raise
            return sa.insert(SCORES).values(values)
        stmt = insert(SCORES).values(values)
        return stmt.on_conflict_do_update(
            index_elements=[SCORES.c.strategy_id, SCORES.c.metric, SCORES.c.step],
            set_={
                "value": stmt.excluded.value,
                "value_kind": stmt.excluded.value_kind,
                "recorded_at": stmt.excluded.recorded_at,
            },
        )

    # -- lifecycle --------------------------------------------------------------------------

    def activate(self, strategy_id: int, reason: str = "") -> StrategyRecord:
        """Make this the scope's one active strategy, retiring the previous one, atomically.

        Only a strategy that can be trusted is activated: not rejected, not failed, and not
        ``running`` (its run has not finished it; runs that stopped heartbeating are reaped
        first, so a dead run's strategy shows as failed). A strategy that fails later while
        active is retired at that moment (see ``_retire_failed``), so a failed strategy is
        never the active one. The database's partial unique index guarantees one active per
        scope; a concurrent activation that loses the race is retried against the new state.
        """
        self.reap_stale()

        def work(s: Session) -> StrategyRecord:
            row = self._locked(s, strategy_id)
            if row.lifecycle == "active":
                return self._records(s, [row])[0]
            if row.lifecycle == "rejected":
                raise InvalidTransition(f"strategy {strategy_id} was rejected; it cannot be activated")
            if row.state == "failed":
                why = f" ({row.reason})" if row.reason else ""
                raise InvalidTransition(f"strategy {strategy_id} failed{why}; it cannot be activated")
            if row.state == "running":
                raise InvalidTransition(
                    f"strategy {strategy_id} is still running (run {row.run_id}); it can be activated"
                    " once its run has completed it"
                )
            now = _utcnow()
            retired_reason = f"replaced by strategy {strategy_id}"
            previous = s.execute(
                sa.update(Strategy)
                .where(Strategy.scope == row.scope, Strategy.lifecycle == "active")
                .values(lifecycle="retired", reason=retired_reason)
                .returning(Strategy.id)
                .execution_options(synchronize_session=False)
            ).scalars().all()
            for old in previous:
                s.add(LineageEventRow(
                    strategy_id=old, event="retired", from_strategy_id=None, at=now,
                    detail={"reason": retired_reason, "replaced_by": strategy_id},
                ))
            row.lifecycle = "active"
            if reason:
                row.reason = reason
            s.flush()  # the one-active index is checked here
            s.add(LineageEventRow(
                strategy_id=strategy_id, event="activated", at=now, run_id=row.run_id,
                from_strategy_id=previous[0] if previous else None,
                detail={"reason": reason, "scope": row.scope},
            ))
            s.flush()
            return self._records(s, [row])[0]

        return self._write(work, active_conflicts=True)

    def retire(self, strategy_id: int, reason: str = "") -> None:
        """Set a strategy aside (active or proposed -> retired); the scope may then have none."""
        self._set_lifecycle(strategy_id, "retired", reason, allowed_from=("active", "proposed"))

    def reject(self, strategy_id: int, reason: str) -> None:
        """Rule a strategy out for good; the active one must be replaced or retired first."""
        self._set_lifecycle(strategy_id, "rejected", reason, allowed_from=("proposed", "retired"))

    def _set_lifecycle(
        self, strategy_id: int, lifecycle: str, reason: str, *, allowed_from: tuple[str, ...]
    ) -> None:
        def work(s: Session) -> None:
            row = self._locked(s, strategy_id)
            if row.lifecycle == lifecycle:
                return
            if row.lifecycle not in allowed_from:
                hint = (
                    f"; activate another strategy of scope {row.scope!r} or retire it first"
                    if row.lifecycle == "active" else ""
                )
                raise InvalidTransition(
                    f"strategy {strategy_id} is {row.lifecycle}; it cannot be {lifecycle}{hint}"
                )
            detail = {"from": row.lifecycle, "reason": reason}
            row.lifecycle = lifecycle
            if reason:
                row.reason = reason
            s.add(LineageEventRow(
                strategy_id=strategy_id, event=lifecycle, run_id=row.run_id, at=_utcnow(),
                detail=detail,
            ))

        self._write(work)

    # -- reading ----------------------------------------------------------------------------

    def get(self, strategy_id: int) -> StrategyRecord:
        self._check_id(strategy_id)

        def work(s: Session) -> StrategyRecord:
            row = s.get(Strategy, strategy_id)
            if row is None:
                raise self._not_found(strategy_id)
            return self._records(s, [row])[0]

        return self._read(work)

    def active_strategy(self, scope: str = "default") -> StrategyRecord | None:
        found = self.list(lifecycle="active", scope=scope)
        return found[0] if found else None

    def list(
        self,
        *,
        state: str | None = None,
        lifecycle: str | None = None,
        plugin: str | None = None,
        metric: str | None = None,
        min_value: float | None = None,
        max_value: float | None = None,
        top_k: int | None = None,
        order: str = "desc",
        scope: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[StrategyRecord]:
        """Strategies matching all given filters.

        With ``metric``: only strategies that have it, ranked by its latest value (``order``),
        ``min_value``/``max_value`` bound that value and ``top_k`` keeps the first k. Without:
        newest first (``order="desc"``) or oldest first. ``offset`` skips that many (pages).
        """
        return self._list(queries.Filters(
            state=state, lifecycle=lifecycle, plugin=plugin, metric=metric,
            min_value=min_value, max_value=max_value, top_k=top_k, order=order,
            scope=scope, limit=limit, offset=offset,
        ))

    def count(self, **filters: Any) -> int:
        """How many strategies :meth:`list` with these filters would give without a limit."""
        f = queries.Filters(**filters)
        self._check_filters(f)
        return self._read(lambda s: int(s.scalar(queries.count(f)) or 0))

    def metric_names(self, scope: str | None = None) -> builtins.list[str]:
        """Every metric name some strategy has a score for."""
        return self._read(lambda s: list(s.scalars(queries.metric_names(scope)).all()))

    def score_history(self, strategy_id: int) -> dict[str, builtins.list[tuple[int, float]]]:
        """Each metric's values over the steps they were recorded at."""
        self.get(strategy_id)  # StrategyNotFound for an unknown id

        def work(s: Session) -> dict[str, builtins.list[tuple[int, float]]]:
            out: dict[str, builtins.list[tuple[int, float]]] = defaultdict(builtins.list)
            for metric, step, value, kind in s.execute(queries.score_history(strategy_id)):
                out[metric].append((step, encoding.decode_score(value, kind)))
            return dict(out)

        return self._read(work)

    def best(
        self, metric: str, scope: str = "default", higher_is_better: bool = True
    ) -> StrategyRecord | None:
        """The strategy with the best latest ``metric`` (NaN, failed and rejected ones excluded)."""
        found = self._list(queries.Filters(
            metric=metric, scope=scope, top_k=1, order="desc" if higher_is_better else "asc",
            exclude_states=("failed",), exclude_lifecycles=("rejected",), exclude_nan=True,
        ))
        return found[0] if found else None

    def _list(self, f: queries.Filters) -> builtins.list[StrategyRecord]:
        self._check_filters(f)

        def work(s: Session) -> builtins.list[StrategyRecord]:
            rows = s.scalars(queries.strategies(f)).all()
            return self._records(s, rows)

        return self._read(work)

    @staticmethod
    def _check_filters(f: queries.Filters) -> None:
        if f.state is not None:
            encoding.choice(f.state, STATES, what="state")
        if f.lifecycle is not None:
            encoding.choice(f.lifecycle, LIFECYCLES, what="lifecycle")
        encoding.choice(f.order, ("asc", "desc"), what="order")
        for label, n in (("top_k", f.top_k), ("limit", f.limit)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise InvalidArgument(f"{label} must be a positive integer, got {n!r}")
        if f.metric is None and (f.top_k, f.min_value, f.max_value) != (None, None, None):
            raise InvalidArgument("top_k, min_value and max_value need a metric")
        for label, v in (("min_value", f.min_value), ("max_value", f.max_value)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v != v):
                raise InvalidArgument(f"{label} must be a number (not NaN), got {v!r}")
        if isinstance(f.offset, bool) or not isinstance(f.offset, int) or f.offset < 0:
            raise InvalidArgument(f"offset must be a non-negative integer, got {f.offset!r}")

    def plugin_enablement(self, scope: str = "default") -> dict[str, int | None]:
        """Each plugin named by a strategy of ``scope`` -> id of the active strategy enabling it."""

        def work(s: Session) -> dict[str, int | None]:
            names = s.scalars(
                sa.select(StrategyPlugin.plugin_name)
                .join(Strategy, Strategy.id == StrategyPlugin.strategy_id)
                .where(Strategy.scope == scope)
                .distinct()
            ).all()
            result: dict[str, int | None] = dict.fromkeys(sorted(names))
            enabled = s.execute(
                sa.select(StrategyPlugin.plugin_name, Strategy.id)
                .join(Strategy, Strategy.id == StrategyPlugin.strategy_id)
                .where(Strategy.scope == scope, Strategy.lifecycle == "active",
                       StrategyPlugin.enabled.is_(True))
            ).all()
            result.update({name: sid for name, sid in enabled})
            return result

        return self._read(work)

    def lineage(self, strategy_id: int) -> builtins.list[LineageEvent]:
        """The strategy's events, oldest first."""

        def work(s: Session) -> builtins.list[LineageEvent]:
            self._locked(s, strategy_id, lock=False)
            return [
                LineageEvent(
                    id=e.id, strategy_id=e.strategy_id, event=e.event,  # type: ignore[arg-type]
                    from_strategy_id=e.from_strategy_id, run_id=e.run_id, detail=e.detail, at=e.at,
                )
                for e in s.scalars(queries.lineage(strategy_id))
            ]

        return self._read(work)

    def ancestry(self, strategy_id: int) -> builtins.list[StrategyRecord]:
        """The chain of parents from the root down to this strategy (inclusive)."""
        return self._walk(strategy_id, queries.ancestry_ids)

    def descendants(self, strategy_id: int) -> builtins.list[StrategyRecord]:
        """Children, grandchildren, ... (not the strategy itself), nearest first."""
        return self._walk(strategy_id, queries.descendant_ids)

    def _walk(
        self, strategy_id: int, ids_of: Callable[[int], sa.Select[tuple[int]]]
    ) -> builtins.list[StrategyRecord]:
        def work(s: Session) -> builtins.list[StrategyRecord]:
            self._locked(s, strategy_id, lock=False)
            ids = s.scalars(ids_of(strategy_id)).all()
            rows = {r.id: r for r in self._fetch(s, Strategy, ids)}
            return self._records(s, [rows[i] for i in ids])

        return self._read(work)

    # -- helpers ----------------------------------------------------------------------------

    def _run_not_found(self, run_id: str | None) -> RunNotFound:
        return RunNotFound(f"no run with id {run_id!r} in registry {display_url(self.url)}")

    def _not_found(self, strategy_id: int, what: str = "strategy") -> StrategyNotFound:
        return StrategyNotFound(f"no {what} with id {strategy_id} in registry {display_url(self.url)}")

    def _locked(self, s: Session, strategy_id: int, *, lock: bool = True) -> Strategy:
        """The strategy row, locked for update on PostgreSQL; raises if missing."""
        self._check_id(strategy_id)
        row = s.get(Strategy, strategy_id, with_for_update=lock or None)
        if row is None:
            raise self._not_found(strategy_id)
        return row

    def _check_id(self, strategy_id: int) -> None:
        """An integer; one no database can hold (e.g. 99999999999999999999) is simply not there."""
        if isinstance(strategy_id, bool) or not isinstance(strategy_id, int):
            raise InvalidArgument(f"strategy id must be an integer, got {strategy_id!r}")
        if not 1 <= strategy_id <= MAX_ID:
            raise self._not_found(strategy_id)

    @staticmethod
    def _fetch(s: Session, model: Any, ids: Sequence[int]) -> builtins.list[Any]:
        out: builtins.list[Any] = []
        for i in range(0, len(ids), CHUNK):
            out.extend(s.scalars(sa.select(model).where(model.id.in_(ids[i:i + CHUNK]))).all())
        return out

    @staticmethod
    def _records(s: Session, rows: Sequence[Strategy]) -> builtins.list[StrategyRecord]:
        ids = [r.id for r in rows]
        plugins: dict[int, builtins.list[str]] = defaultdict(builtins.list)
        scores: dict[int, dict[str, float]] = defaultdict(dict)
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i:i + CHUNK]
            for sid, name in s.execute(queries.enabled_plugins(chunk)):
                plugins[sid].append(name)
            for sid, metric, value, kind in s.execute(queries.latest_scores(chunk)):
                scores[sid][metric] = encoding.decode_score(value, kind)
        return [
            StrategyRecord(
                id=r.id, run_id=r.run_id, parent_id=r.parent_id, generation=r.generation,
                origin=r.origin, state=r.state, lifecycle=r.lifecycle,  # type: ignore[arg-type]
                plugins=plugins[r.id], params=r.params, scores=scores[r.id],
                content_hash=r.content_hash, created_at=r.created_at,
                completed_at=r.completed_at, scope=r.scope, reason=r.reason,
            )
            for r in rows
        ]
