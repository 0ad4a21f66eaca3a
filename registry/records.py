"""What the registry hands back: immutable pydantic snapshots, detached from any session."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .encoding import score_to_json

Origin = Literal["seed", "explore", "exploit", "crossover", "manual", "plugin"]
State = Literal["candidate", "running", "complete", "failed"]
Lifecycle = Literal["proposed", "active", "retired", "rejected"]
Event = Literal["created", "state_changed", "activated", "retired", "rejected"]


class StrategyRecord(BaseModel):
    """A strategy with its enabled plugins and the latest value of each metric."""

    model_config = ConfigDict(frozen=True)

    id: int
    run_id: str | None
    parent_id: int | None
    generation: int
    origin: Origin
    state: State
    lifecycle: Lifecycle
    plugins: list[str]
    params: dict[str, Any]
    scores: dict[str, float]
    content_hash: str
    created_at: datetime
    completed_at: datetime | None
    scope: str
    reason: str

    def to_json_dict(self) -> dict[str, Any]:
        """For ``--json`` output: ISO-8601 times, non-finite scores as "nan"/"inf"/"-inf"."""
        data = self.model_dump(mode="json", exclude={"scores"})
        data["scores"] = {k: score_to_json(v) for k, v in self.scores.items()}
        return {name: data[name] for name in type(self).model_fields}


class LineageEvent(BaseModel):
    """One entry of a strategy's history; ``from_strategy_id`` is the parent or predecessor."""

    model_config = ConfigDict(frozen=True)

    id: int
    strategy_id: int
    event: Event
    from_strategy_id: int | None
    run_id: str | None
    detail: dict[str, Any]
    at: datetime

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
