"""Dataset rows from a file, for ``rewardbridge score | eval``: JSONL, JSON, CSV, Parquet, or a
``datasets`` folder written by ``save_to_disk``.

Rows stream one at a time with where they came from (``line 7`` for line-based files, ``row 3``
otherwise), so a malformed row is reported by its place, and with an identity (its index and
a hash of its content) that lets an interrupted job resume without scoring a row twice.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import ConfigError, InputError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# CSV cells are strings; these columns may hold chat messages written as JSON text.
STRUCTURED_COLUMNS = ("prompt", "completion", "chosen", "rejected", "response", "conversations")
# What Dataset.save_to_disk (state.json, dataset_info.json) and DatasetDict.save_to_disk write.
SAVED_MARKERS = ("state.json", "dataset_info.json", "dataset_dict.json")


@dataclass(frozen=True)
class Row:
    """One input row.

    Attributes:
        index: 0-based position among the file's rows (blank JSONL lines are not rows).
        where: its place for messages: ``"line 7"`` (JSONL, CSV) or ``"row 3"`` (1-based).
        data: the row as a dict, or None when it could not be read.
        error: why it could not be read (malformed JSON, not an object).
        raw: the unreadable text, kept for the rejects file.
    """

    index: int
    where: str
    data: dict | None
    error: str | None = None
    raw: str | None = None

    @property
    def row_id(self) -> str:
        """``"<index>:<hash of content>"``: the same row at the same place has the same id."""
        content = json.dumps(self.data, sort_keys=True, default=str) if self.data is not None else self.raw or ""
        return f"{self.index}:{hashlib.sha1(content.encode('utf-8')).hexdigest()[:16]}"


# What each command takes, for the hint when a model folder is given as data.
USAGES = "rewardbridge score MODEL DATA -o OUT, rewardbridge eval MODEL DATA, rewardbridge pairs POLICY PROMPTS --reward MODEL"


def file_format(path: str, usage: str | None = None) -> str:
    """``"jsonl" | "json" | "csv" | "parquet" | "disk"``; ``usage`` (the command's arguments) names the
    right order when a model folder was given as the data."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or folder")
    if os.path.isdir(path):
        if any(os.path.exists(os.path.join(path, name)) for name in SAVED_MARKERS):
            return "disk"
        if os.path.exists(os.path.join(path, "config.json")):
            raise ConfigError(
                f"{path} is a model folder (it has config.json), not data; were the model and the data given the other way "
                f"round? ({usage or USAGES})"
            )
        raise ConfigError(
            f"{path} is a folder but not one datasets' save_to_disk wrote (none of {list(SAVED_MARKERS)}); "
            "pass a .jsonl, .json, .csv or .parquet file, or such a folder"
        )
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ConfigError(
            f"{path}: unknown file type {ext!r}; use .jsonl, .json, .csv, .parquet or a datasets save_to_disk folder"
        )
    return FORMATS[ext]


def count_rows(path: str, usage: str | None = None) -> int | None:
    """The number of rows, for a progress bar (None when it would cost a full parse)."""
    fmt = file_format(path, usage)
    if fmt == "jsonl":
        with open(path, "rb") as f:  # bytes: a line that is not UTF-8 is reported where it is read, by its number
            return sum(1 for line in f if line.strip())
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if fmt == "disk":
        return len(_load_from_disk(path))
    return None


def read_rows(path: str, usage: str | None = None) -> Iterator[Row]:
    """Every row of ``path``, in order."""
    reader = {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet, "disk": _disk}[file_format(path, usage)]
    yield from reader(path)


def first_row(path: str, usage: str | None = None) -> Row | None:
    """The first row (None for an empty file): read before any model loads, so a file of the wrong
    format, encoding or columns fails in seconds."""
    return next(iter(read_rows(path, usage)), None)


def _lines(path: str) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, error) per line, UTF-8 with an optional byte-order mark (Excel and Notepad
    write one): a line that is not UTF-8 comes with the error naming its line and byte, not a
    UnicodeDecodeError from the middle of the file."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield number, raw.decode("utf-8"), None
            except UnicodeDecodeError as error:
                yield number, None, (f"is not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1}); save "
                                     "the file as UTF-8 (a cp1252 / Latin-1 file: iconv -f cp1252 -t utf-8)")


class _DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    """json's object hook: a key given twice is refused (json keeps the last silently: a row
    ``{"prompt": "a", ..., "prompt": "zzz"}`` would be scored as "zzz")."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _DuplicateKey(twice)
    return data


def _from_json_text(index: int, where: str, text: str) -> Row:
    try:
        data = json.loads(text, object_pairs_hook=_object_without_duplicates)
    except json.JSONDecodeError as error:
        return Row(index, where, None, f"not valid JSON ({error.msg} at column {error.colno})", text)
    except _DuplicateKey as error:
        return Row(index, where, None, f"the key {str(error)!r} is given twice in one object (which is meant?)", text)
    if not isinstance(data, dict):
        return Row(index, where, None, f"a row must be a JSON object, got {type(data).__name__}", text)
    return Row(index, where, data)


def _jsonl(path: str) -> Iterator[Row]:
    index = 0
    for number, line, error in _lines(path):
        if error is not None:
            yield Row(index, f"line {number}", None, error, f"(line {number}: not UTF-8)")
            index += 1
            continue
        if not line.strip():
            continue
        yield _from_json_text(index, f"line {number}", line.rstrip("\r\n"))
        index += 1


def _json(path: str) -> Iterator[Row]:
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError:  # name the line
        bad = next(f"line {number}: {error}" for number, _, error in _lines(path) if error is not None)
        raise InputError(f"{path} {bad}") from None
    try:
        data = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":  # JSON lines in a .json file (datasets' to_json writes these)
            yield from _jsonl(path)
            return
        raise InputError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}); expected a list of row objects") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of row objects, got {type(data).__name__}")
    for index, item in enumerate(data):
        where = f"row {index + 1}"
        if isinstance(item, dict):
            yield Row(index, where, item)
        else:
            yield Row(index, where, None, f"a row must be a JSON object, got {type(item).__name__}", json.dumps(item))


def _csv_text(path: str) -> Iterator[str]:
    """The file's lines as text for the csv module (which joins a quoted cell's lines itself)."""
    for number, line, error in _lines(path):
        if error is not None:
            raise InputError(f"{path} line {number} {error}")
        yield line


def _csv(path: str) -> Iterator[Row]:
    lines = _csv_text(path)
    header = next(lines, None)
    if header is None:
        return
    # The separator the file was written with: commas, or what Excel writes in many locales (;), or tabs.
    counts = {sep: header.count(sep) for sep in (",", ";", "\t", "|")}
    delimiter = "," if counts[","] else max(counts, key=counts.get) if any(counts.values()) else ","
    reader = csv.DictReader(itertools.chain([header], lines), delimiter=delimiter)
    names = reader.fieldnames or []
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # DictReader would keep the last of them without a word
        columns = [i + 1 for i, n in enumerate(names) if n == twice[0]]
        raise InputError(f"{path}: the header names the column {twice[0]!r} twice (columns {columns}); give each column its own name")
    start = 2  # the first data row follows the header line
    for index, record in enumerate(reader):
        where = f"line {start}"
        start = reader.line_num + 1
        if None in record or any(v is None for v in record.values()):
            yield Row(index, where, None, f"has a different number of cells than the header {reader.fieldnames}",
                      json.dumps(record, default=str))
            continue
        try:
            yield Row(index, where, {k: _maybe_json(k, v) for k, v in record.items()})
        except InputError as error:
            yield Row(index, where, None, str(error), json.dumps(record))


def _maybe_json(column: str, value: str) -> Any:
    """A chat column's cell: JSON text is parsed; a Python repr (what pandas' to_csv writes for a
    list of dicts) is refused, since as text it would be scored as the characters of a repr."""
    import ast

    if column not in STRUCTURED_COLUMNS or value.lstrip()[:1] not in ("[", "{"):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        literal = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value  # text that merely starts with a bracket, such as "[INST] ..."
    if isinstance(literal, (list, dict)):
        raise InputError(
            f"column {column!r} holds a Python repr ({value[:40]!r}...), not JSON; pandas' to_csv writes lists that way. "
            f"Write the column as JSON (df[{column!r}] = df[{column!r}].map(json.dumps)) or save the rows as JSONL"
        )
    return value


def _parquet(path: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            yield Row(index, f"row {index + 1}", record)
            index += 1


def _load_from_disk(path: str):
    from datasets import Dataset, load_from_disk

    dataset = load_from_disk(path)
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"{path} holds several splits {sorted(dataset)}; pass one split's folder, e.g. {path}/{sorted(dataset)[0]}")
    return dataset


def _disk(path: str) -> Iterator[Row]:
    for index, record in enumerate(_load_from_disk(path)):
        yield Row(index, f"row {index + 1}", dict(record))
