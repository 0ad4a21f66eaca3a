"""SELECT statements for reading the registry (filters, rankings, lineage walks).

Every user-supplied value enters as a bound parameter. "Latest" score = the highest step
recorded for that (strategy, metric). Rankings put +inf above finite values above -inf, and
NaN last in either direction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from .models import LineageEventRow, Score, Strategy, StrategyPlugin

#: Guard for lineage walks over a (corrupted) cyclic parent chain.
MAX_DEPTH = 100_000


@dataclass(frozen=True)
class Filters:
    state: str | None = None
    lifecycle: str | None = None
    plugin: str | None = None
    metric: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    top_k: int | None = None
    order: str = "desc"
    scope: str | None = None
    limit: int | None = None
    offset: int = 0
    exclude_states: tuple[str, ...] = ()
    exclude_lifecycles: tuple[str, ...] = ()
    exclude_nan: bool = False


def latest_metric(metric: str) -> sa.Subquery:
    """(strategy_id, value, value_kind) of each strategy's latest value of ``metric``."""
    last = (
        sa.select(Score.strategy_id, sa.func.max(Score.step).label("step"))
        .where(Score.metric == metric)
        .group_by(Score.strategy_id)
        .subquery("last_step")
    )
    return (
        sa.select(Score.strategy_id, Score.value, Score.value_kind)
        .join(last, sa.and_(Score.strategy_id == last.c.strategy_id, Score.step == last.c.step))
        .where(Score.metric == metric)
        .subquery("latest")
    )


def _rank(kind: sa.ColumnElement[str], descending: bool) -> sa.ColumnElement[int]:
    """Orders value kinds; NaN goes last whichever the direction."""
    return sa.case(
        (kind == "-inf", 0),
        (kind == "finite", 1),
        (kind == "inf", 2),
        else_=-1 if descending else 3,
    )


def strategies(f: Filters) -> sa.Select[tuple[Strategy]]:
    """Strategies matching all filters, ranked by ``f.metric`` if given, else by id."""
    descending = f.order == "desc"
    stmt = sa.select(Strategy)
    if f.state is not None:
        stmt = stmt.where(Strategy.state == f.state)
    if f.lifecycle is not None:
        stmt = stmt.where(Strategy.lifecycle == f.lifecycle)
    if f.exclude_states:
        stmt = stmt.where(Strategy.state.not_in(f.exclude_states))
    if f.exclude_lifecycles:
        stmt = stmt.where(Strategy.lifecycle.not_in(f.exclude_lifecycles))
    if f.scope is not None:
        stmt = stmt.where(Strategy.scope == f.scope)
    if f.plugin is not None:
        stmt = stmt.where(
            sa.exists().where(
                StrategyPlugin.strategy_id == Strategy.id,
                StrategyPlugin.plugin_name == f.plugin,
                StrategyPlugin.enabled.is_(True),
            )
        )
    if f.metric is None:
        order = Strategy.id.desc() if descending else Strategy.id.asc()
        stmt = stmt.order_by(order)
    else:
        latest = latest_metric(f.metric)
        stmt = stmt.join(latest, latest.c.strategy_id == Strategy.id)
        kind, value = latest.c.value_kind, latest.c.value
        if f.min_value is not None:
            stmt = stmt.where(
                sa.or_(sa.and_(kind == "finite", value >= f.min_value), kind == "inf")
            )
        if f.max_value is not None:
            stmt = stmt.where(
                sa.or_(sa.and_(kind == "finite", value <= f.max_value), kind == "-inf")
            )
        if f.exclude_nan:
            stmt = stmt.where(kind != "nan")
        rank = _rank(kind, descending)
        if descending:
            stmt = stmt.order_by(rank.desc(), value.desc(), Strategy.id.asc())
        else:
            stmt = stmt.order_by(rank.asc(), value.asc(), Strategy.id.asc())
    limits = [n for n in (f.top_k, f.limit) if n is not None]
    if limits:
        stmt = stmt.limit(min(limits))
    if f.offset:
        stmt = stmt.offset(f.offset)
    return stmt


def count(f: Filters) -> sa.Select[tuple[int]]:
    """How many strategies match ``f`` (ignoring its limit, offset and order)."""
    unpaged = strategies(dataclasses.replace(f, limit=None, top_k=None, offset=0)).order_by(None)
    return sa.select(sa.func.count()).select_from(unpaged.subquery())


def metric_names(scope: str | None = None) -> sa.Select[tuple[str]]:
    stmt = sa.select(Score.metric).distinct().order_by(Score.metric)
    if scope is not None:
        stmt = stmt.join(Strategy, Strategy.id == Score.strategy_id).where(Strategy.scope == scope)
    return stmt


def score_history(strategy_id: int) -> sa.Select[tuple[str, int, float | None, str]]:
    """(metric, step, value, value_kind) of every score a strategy has, by metric and step."""
    return (
        sa.select(Score.metric, Score.step, Score.value, Score.value_kind)
        .where(Score.strategy_id == strategy_id)
        .order_by(Score.metric, Score.step)
    )


def enabled_plugins(ids: Sequence[int]) -> sa.Select[tuple[int, str]]:
    return (
        sa.select(StrategyPlugin.strategy_id, StrategyPlugin.plugin_name)
        .where(StrategyPlugin.strategy_id.in_(ids), StrategyPlugin.enabled.is_(True))
        .order_by(StrategyPlugin.strategy_id, StrategyPlugin.plugin_name)
    )


def latest_scores(ids: Sequence[int]) -> sa.Select[tuple[int, str, float | None, str]]:
    """(strategy_id, metric, value, value_kind) of the latest step of every metric."""
    last = (
        sa.select(Score.strategy_id, Score.metric, sa.func.max(Score.step).label("step"))
        .where(Score.strategy_id.in_(ids))
        .group_by(Score.strategy_id, Score.metric)
        .subquery("last_step")
    )
    return (
        sa.select(Score.strategy_id, Score.metric, Score.value, Score.value_kind)
        .join(
            last,
            sa.and_(
                Score.strategy_id == last.c.strategy_id,
                Score.metric == last.c.metric,
                Score.step == last.c.step,
            ),
        )
        .where(Score.strategy_id.in_(ids))  # lets the planner use the primary key on both sides
        .order_by(Score.strategy_id, Score.metric)
    )


def ancestry_ids(strategy_id: int) -> sa.Select[tuple[int]]:
    """Ids from the root down to ``strategy_id`` (inclusive)."""
    walk = (
        sa.select(Strategy.id, Strategy.parent_id, sa.literal(0).label("depth"))
        .where(Strategy.id == strategy_id)
        .cte("ancestry", recursive=True)
    )
    walk = walk.union_all(
        sa.select(Strategy.id, Strategy.parent_id, walk.c.depth + 1)
        .join(walk, Strategy.id == walk.c.parent_id)
        .where(walk.c.depth < MAX_DEPTH)
    )
    return sa.select(walk.c.id).order_by(walk.c.depth.desc())


def descendant_ids(strategy_id: int) -> sa.Select[tuple[int]]:
    """Ids of all descendants (not ``strategy_id`` itself), nearest generations first."""
    walk = (
        sa.select(Strategy.id, sa.literal(0).label("depth"))
        .where(Strategy.id == strategy_id)
        .cte("descendants", recursive=True)
    )
    walk = walk.union_all(
        sa.select(Strategy.id, walk.c.depth + 1)
        .join(walk, Strategy.parent_id == walk.c.id)
        .where(walk.c.depth < MAX_DEPTH)
    )
    return sa.select(walk.c.id).where(walk.c.depth > 0).order_by(walk.c.depth, walk.c.id)


def lineage(strategy_id: int) -> sa.Select[tuple[LineageEventRow]]:
    return (
        sa.select(LineageEventRow)
        .where(LineageEventRow.strategy_id == strategy_id)
        .order_by(LineageEventRow.id)
    )
