"""Historical usage files (JSONL or CSV) turned into usage-event payloads for the imports topic.

Each row becomes one record on `tokenops.usage.imports.v1`, read by the warehouse loader
through the same contract, pricing and expectation checks as live traffic: a bad row is
quarantined there with its reason, never dropped here. Rows are converted, not validated:
- JSONL: each line is a usage event in its wire format;
- CSV: a header names event fields (`event_time`, `tenant`, `provider`, ...); token counts come
  from `<class>_tokens` columns (`input_uncached_tokens`, `output_tokens`, ...) or
  `tokens.<class>`; `tags` are separated by `;`; `raw_usage` holds JSON; empty cells are absent.
A row without an `event_id` gets one derived from its content, so importing the same file
twice loads each row once.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ingest.usage_event import TokenCounts

ImportFormat = Literal["jsonl", "csv"]
TOKEN_CLASSES = tuple(TokenCounts.model_fields)


@dataclass(frozen=True)
class ImportRow:
    line: int
    key: bytes
    payload: bytes


def detect_format(path: Path) -> ImportFormat:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise ValueError(
        f"cannot tell the format of {path.name}: name it .jsonl or .csv, or pass --format"
    )


def _with_id(row: dict[str, Any]) -> dict[str, Any]:
    if not row.get("event_id"):
        canonical = json.dumps(row, sort_keys=True, separators=(",", ":"), default=str)
        row = {"event_id": "imp-" + hashlib.sha256(canonical.encode()).hexdigest()[:40], **row}
    return row


def _csv_event(cells: dict[str, str]) -> dict[str, Any]:
    event: dict[str, Any] = {}
    tokens: dict[str, str] = {}
    for column, cell in cells.items():
        if column is None or cell is None or cell == "":
            continue
        name = column.strip()
        if name.startswith("tokens."):
            tokens[name.removeprefix("tokens.")] = cell
        elif name.endswith("_tokens") and name.removesuffix("_tokens") in TOKEN_CLASSES:
            tokens[name.removesuffix("_tokens")] = cell
        elif name == "tags":
            event["tags"] = [t for t in cell.split(";") if t]
        elif name in ("raw_usage", "cost_by_class"):
            try:
                event[name] = json.loads(cell)
            except ValueError:
                event[name] = cell  # the contract check names the field
        else:
            event[name] = cell
    if tokens:
        event["tokens"] = tokens
    return event


def read_rows(path: Path, fmt: ImportFormat | None = None) -> Iterator[ImportRow]:
    """Every row of `path` as a payload, in file order (line numbers are 1-based)."""
    fmt = fmt or detect_format(path)
    with path.open(newline="" if fmt == "csv" else None, encoding="utf-8", errors="replace") as f:
        if fmt == "jsonl":
            for line, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except ValueError:
                    yield ImportRow(line, b"", text.rstrip("\n").encode())
                    continue
                if not isinstance(row, dict):
                    yield ImportRow(line, b"", text.rstrip("\n").encode())
                    continue
                row = _with_id(row)
                yield ImportRow(line, str(row.get("tenant", "")).encode(), json.dumps(row).encode())
        else:
            for line, cells in enumerate(csv.DictReader(f), start=2):
                row = _with_id(_csv_event(cells))
                yield ImportRow(line, str(row.get("tenant", "")).encode(), json.dumps(row).encode())
