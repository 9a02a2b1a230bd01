"""Append-only JSONL journal of finished work, so an interrupted evaluation resumes exactly.

Every line carries ``key`` (a hash of the run's arguments); lines of other runs are ignored. A line is
written and fsync'ed in one piece after its work is done; a run killed mid-write leaves at most a
truncated last line, which is dropped (and cut off the file) when the journal is opened again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


def args_key(config: dict) -> str:
    """A stable 16-hex hash of a JSON-able configuration."""
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Journal:
    def __init__(self, path: str | os.PathLike | None, key: str) -> None:
        self.path = Path(path) if path is not None else None
        self.key = key
        self.records: list[dict] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        pos = 0
        for line in data.split(b"\n"):
            end = pos + len(line) + 1
            if end > len(data):  # no trailing newline: a truncated (or empty) last line
                break
            pos = end
            if not line.strip():
                good_end = end
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            good_end = end
            if rec.get("key") == self.key:
                self.records.append(rec)
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)

    def append(self, record: dict[str, Any]) -> None:
        rec = {"key": self.key, **record}
        self.records.append(rec)
        if self.path is None:
            return
        line = json.dumps(rec, sort_keys=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def of_type(self, kind: str) -> Iterator[dict]:
        return (r for r in self.records if r.get("type") == kind)
