"""Where rollouts live between restarts: one SQLite file under --state-dir.

A row per model with a rollout (its state, step, versions, and what the
judge has established so far), an append-only event history (every
transition and every verdict, with its figures), and the version each
finished rollout left serving (`pin`), which later loads keep to. Each write commits at once
(WAL journal), so a server killed with SIGKILL and started again resumes the
same step. Only the control plane touches it, never a request."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    model TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    step INTEGER NOT NULL,
    stable INTEGER NOT NULL,
    canary INTEGER NOT NULL,
    reason TEXT NOT NULL,
    started_at REAL NOT NULL,
    step_started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    look INTEGER NOT NULL,
    errors_cleared INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    step INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_model ON events (model, id);
CREATE TABLE IF NOT EXISTS serving (
    model TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    """A rollout as stored: enough to resume it after a restart."""

    model: str
    state: str
    step: int
    stable: int
    canary: int
    reason: str
    started_at: float
    step_started_at: float
    updated_at: float
    look: int = 0
    errors_cleared: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    model: str
    at: float
    kind: str  # "transition" or "verdict"
    state: str
    step: int
    reason: str
    detail: Mapping[str, Any]


class StateStore:
    """The rollouts and their history in `path` (created if missing)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def save(self, record: RolloutRecord) -> None:
        row = asdict(record)
        row["errors_cleared"] = int(record.errors_cleared)
        names = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        self._db.execute(f"INSERT OR REPLACE INTO rollouts ({names}) VALUES ({marks})", row)

    def load(self, model: str) -> RolloutRecord | None:
        cursor = self._db.execute("SELECT * FROM rollouts WHERE model = ?", (model,))
        row = cursor.fetchone()
        if row is None:
            return None
        fields = dict(zip([c[0] for c in cursor.description], row, strict=True))
        fields["errors_cleared"] = bool(fields["errors_cleared"])
        return RolloutRecord(**fields)

    def models(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT model FROM rollouts ORDER BY model")]

    def pin(self, model: str, version: int) -> None:
        """The version a finished rollout left serving, for every later load."""
        self._db.execute(
            "INSERT OR REPLACE INTO serving (model, version) VALUES (?, ?)", (model, version)
        )

    def pinned(self, model: str) -> int | None:
        row = self._db.execute("SELECT version FROM serving WHERE model = ?", (model,)).fetchone()
        return None if row is None else int(row[0])

    def append(self, event: Event) -> None:
        self._db.execute(
            "INSERT INTO events (model, at, kind, state, step, reason, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.model,
                event.at,
                event.kind,
                event.state,
                event.step,
                event.reason,
                json.dumps(event.detail, default=float),
            ),
        )

    def events(self, model: str, limit: int = 50) -> list[Event]:
        """The model's latest `limit` events, oldest first."""
        rows = self._db.execute(
            "SELECT model, at, kind, state, step, reason, detail FROM events "
            "WHERE model = ? ORDER BY id DESC LIMIT ?",
            (model, limit),
        ).fetchall()
        return [
            Event(m, at, kind, state, step, reason, json.loads(detail))
            for m, at, kind, state, step, reason, detail in reversed(rows)
        ]
