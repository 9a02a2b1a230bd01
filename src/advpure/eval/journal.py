"""Append-only JSONL journal of finished work, so an interrupted evaluation resumes exactly.

A journal belongs to one run. Its first line is a header with the run's *identity*: digests of what produced the
numbers (the weights of the classifier and of the defense as they are in memory, the data subset's indices and
pixels, the attack and defense specs, seeds, protocol and code version; :func:`content_digest`). Every further line
carries ``key`` (a hash of that identity). Opening a journal written by a run with another identity is an error
naming what changed (a retrained model saved under the same path, other data, another attack...), never a silent
reuse of old results. A line is written and fsync'ed in one piece after its work is done; a run killed mid-write
leaves at most a truncated last line, which is dropped (and cut off the file) when the journal is opened again.
Unreadable lines elsewhere are skipped and counted (``skipped``), never hiding the valid lines after them. While
a run holds a journal it holds an exclusive lock on it (``fcntl.flock``), so a second run on the same journal is
refused with a clear error instead of doing all the work twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch


def args_key(config: dict) -> str:
    """A stable 16-hex hash of a JSON-able configuration."""
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tensor_digest(t: torch.Tensor, h: "hashlib._Hash | None" = None) -> str:
    """sha256 of a tensor's dtype, shape and bytes (CPU, contiguous)."""
    h = h or hashlib.sha256()
    t = t.detach().to("cpu").contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too
    return h.hexdigest()


def content_digest(obj: Any) -> str | None:
    """A 16-hex digest of what an object computes with: for a module, its class and every parameter and buffer
    (persistent or not) by name, as they are in memory now, plus the tensors and numbers of attributes such as
    an EPS reference; for a string, the string. None for None."""
    if obj is None:
        return None
    if isinstance(obj, str):
        return hashlib.sha256(obj.encode()).hexdigest()[:16]
    h = hashlib.sha256(type(obj).__qualname__.encode())
    if isinstance(obj, torch.nn.Module):
        for name, t in list(obj.named_parameters()) + list(obj.named_buffers()):
            h.update(name.encode())
            tensor_digest(t, h)
        for mod_name, mod in obj.named_modules():
            for k, v in sorted(vars(mod).items()):
                if k.startswith("_") or isinstance(v, (torch.nn.Module, torch.Tensor)):
                    continue
                if isinstance(v, (int, float, str, bool)):
                    h.update(f"{mod_name}.{k}={v!r}".encode())
                elif hasattr(v, "__dict__") and not callable(v):  # e.g. an EPSReference: its numbers and tensors
                    for kk, vv in sorted(vars(v).items()):
                        if isinstance(vv, torch.Tensor):
                            h.update(f"{mod_name}.{k}.{kk}".encode())
                            tensor_digest(vv, h)
                        elif isinstance(vv, (int, float, str, bool, list, tuple)):
                            h.update(f"{mod_name}.{k}.{kk}={vv!r}".encode())
    else:
        h.update(repr(obj).encode())
    return h.hexdigest()[:16]


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


class JournalError(ValueError):
    """A journal that cannot be resumed by this run (another run's, or in use)."""


class Journal:
    def __init__(self, path: str | os.PathLike | None, key: str, identity: dict | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.key = key
        self.identity = identity
        self.records: list[dict] = []
        self.skipped = 0
        self._lock_fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
            self._load()
            if identity is not None and not any(r.get("type") == "header" for r in self.records):
                self.append({"type": "header", "identity": identity})

    def _lock(self) -> None:
        import fcntl

        assert self.path is not None
        fh = open(self.path, "a+b")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise JournalError(f"journal {self.path} is in use by another run (locked); wait for it to finish or "
                               "use another --journal") from None
        self._lock_fh = fh

    def close(self) -> None:
        """Release the lock (also released when the process exits)."""
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def _load(self) -> None:
        assert self.path is not None
        data = self.path.read_bytes()
        good_end = 0
        pos = 0
        other: dict | None = None
        for line in data.split(b"\n"):
            end = pos + len(line) + 1
            if end > len(data):  # no trailing newline: a truncated (or empty) last line
                break
            pos = end
            good_end = end
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except (ValueError, RecursionError):  # garbage, or JSON nested too deep to parse
                self.skipped += 1
                continue
            if rec.get("key") == self.key:
                self.records.append(rec)
            elif rec.get("type") == "header" and other is None:
                other = rec
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        if other is not None and not self.records:
            changed = _what_changed(other.get("identity") or {}, self.identity or {})
            raise JournalError(f"journal {self.path} was written by another run: {changed}. Results are bound to what "
                               "produced them; use a new --journal (or delete this one) to start over")
        if self.skipped:
            import sys

            print(f"journal {self.path}: skipped {self.skipped} unreadable line(s); every valid line was kept",
                  file=sys.stderr)

    def append(self, record: dict[str, Any]) -> None:
        rec = {"key": self.key, **record}
        self.records.append(rec)
        if self.path is None:
            return
        line = json.dumps(strict_json(rec), sort_keys=True, allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def of_type(self, kind: str) -> Iterator[dict]:
        return (r for r in self.records if r.get("type") == kind)

    def once(self, kind: str, field: str, compute: Callable[[], Any]) -> Any:
        """``field`` of the last ``kind`` record (a resumed run); else ``compute()``, journalled as that record."""
        prev = list(self.of_type(kind))
        if prev:
            return prev[-1][field]
        value = compute()
        self.append({"type": kind, field: value})
        return value


def _what_changed(old: dict, new: dict) -> str:
    diffs = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if not diffs:
        return "its identity differs in a field this version does not record"
    parts = []
    for k in diffs[:4]:
        a, b = old.get(k), new.get(k)
        if isinstance(a, str) and isinstance(b, str) and len(a) <= 16 and len(b) <= 16:
            parts.append(f"{k} changed ({a} -> {b})")
        else:
            parts.append(f"{k} changed")
    return ", ".join(parts)


def read_records(path: str | os.PathLike, key: str) -> list[dict]:
    """The complete lines of ``path`` carrying ``key``, read without locking or truncating (another process of the
    same run may be appending to it)."""
    out = []
    try:
        data = Path(path).read_bytes()
    except OSError:
        return out
    for line in data.split(b"\n")[:-1]:  # the last piece has no newline yet: incomplete
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(rec, dict) and rec.get("key") == key:
            out.append(rec)
    return out


def sibling_records(journal: str | os.PathLike | None, own: Path | None, key: str) -> list[dict]:
    """Records of this run in the journal's other files: ``JOURNAL`` itself and ``JOURNAL.rank{r}of{w}`` for any
    process count, except ``own`` (the file this process writes)."""
    if journal is None:
        return []
    import re

    base = Path(journal)
    pattern = re.compile(re.escape(base.name) + r"(\.rank\d+of\d+)?")
    out: list[dict] = []
    if base.parent.is_dir():
        for p in sorted(base.parent.iterdir()):
            if pattern.fullmatch(p.name) and (own is None or p.resolve() != own.resolve()):
                out += read_records(p, key)
    return out
