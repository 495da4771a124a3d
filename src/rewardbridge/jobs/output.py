"""A job's output, kept safe: never overwritten, never the input, never written by two runs,
and never resumed by a run that would mix another model's or other options' scores into it.

``rewardbridge score`` (and any job that writes rows as it goes) uses one :class:`JobOutput`:

1. :meth:`JobOutput.check` (before any model loads): every path it will write is in an
   existing folder, none is the input, and none already holds data unless ``resume``;
2. ``with job.locked():``: exclusive locks on the real files, however they are named: a lock file
   beside each file's real path (``REAL.lock``: a symlink and its target share it, as do ``-o
   X.scored.jsonl`` and ``--best-of-n -o X``) and an ``flock`` on each file itself (a hard link
   shares its inode), so a second run on the same output stops at once instead of writing every
   row a second time; :func:`check_input_free` refuses, as input, a file a run is writing;
3. :meth:`JobOutput.start` with the run's :class:`RunRecord` (source, options, input, the job's
   settings, the model's fingerprint: ``fingerprint.py``): it is written to ``OUT.run.json``; a
   resume whose record differs is refused, naming what changed, and the rows already done are read
   back by identity, refusing an output that holds a row twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from ..errors import ConfigError, InputError

RECORD_SUFFIX = ".run.json"
LOCK_SUFFIX = ".lock"
# Options that change how a score is fetched, not what it is: a resume may change them.
RUNTIME_OPTIONS = frozenset({
    "name", "timeout", "max_retries", "retry_wait", "max_concurrency", "request_batch_size", "api_key_env", "on_error",
    "device", "max_tokens_per_batch",
})


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What produced an output, as ``OUT.run.json`` holds it.

    Attributes:
        command: the job, e.g. ``"rewardbridge score"``.
        source: the reward source as resolved (an absolute folder, a hub id, URLs).
        options: the options that decide a score (``RewardOptions.changed()`` less
            :data:`RUNTIME_OPTIONS`), as JSON values.
        input: the input's absolute path.
        settings: the job's own settings that decide what is written (filters, label style).
        model: the model's fingerprint (``fingerprint.model_fingerprint``: real path, file hashes or
            sizes and times, hub commit, dtype); empty in records written before it was kept.
    """

    command: str
    source: str
    options: dict[str, Any]
    input: str
    settings: dict[str, Any]
    model: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, command: str, source: str, options: Any, input: str, settings: dict[str, Any],
           model: dict[str, Any] | None = None) -> RunRecord:
        """Build from a ``RewardOptions``; values become plain JSON (tuples as lists)."""
        chosen = {k: v for k, v in options.changed().items() if k not in RUNTIME_OPTIONS}
        return cls(command, str(source), _plain(chosen), os.path.abspath(input), _plain(settings), _plain(model or {}))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def differences(self, other: RunRecord) -> list[str]:
        """What differs from ``other`` (the earlier run), in words: ``"options.max_length: unset -> 64"``.

        >>> a = RunRecord("score", "/m", {"normalize": "zscore"}, "/in.jsonl", {})
        >>> a.differences(RunRecord("score", "/m2", {}, "/in.jsonl", {}))
        ["source: '/m2' -> '/m'", "options.normalize: unset -> 'zscore'"]
        """
        changes = []
        for name in ("command", "source", "input"):
            if getattr(self, name) != getattr(other, name):
                changes.append(f"{name}: {getattr(other, name)!r} -> {getattr(self, name)!r}")
        groups = ("options", "settings", "model") if self.model and other.model else ("options", "settings")
        for group in groups:
            now, before = getattr(self, group), getattr(other, group)
            for key in sorted(set(now) | set(before)):
                if now.get(key) != before.get(key):
                    changes.append(f"{group}.{key}: {_shown(before, key)} -> {_shown(now, key)}")
        return changes


def followed(path: str) -> str:
    """``path``, or the file a symlink ``path`` names: a job's side files (``OUT.run.json``, ``OUT.lock``,
    ``OUT.rejects.jsonl``) go beside the real file, so a run and its resume through the link (or the
    real name) find the same ones."""
    if not os.path.islink(path):
        return path
    target = os.path.realpath(path)
    # A link into a folder that is not there stays as it is: check_writable names the link and its target.
    return target if os.path.isdir(os.path.dirname(target)) else path


class JobOutput:
    """The files one job writes under ``output``, checked, locked, started and resumed together.

    Args:
        output: the path the user named (``--output``).
        input: the input file or folder (never written).
        files: every file the job appends rows to (``output`` itself, ``OUT.scored.jsonl``,
            ``OUT.rejects.jsonl``); rows are JSON lines with a ``row_id``.
        final: a file written whole at the end from ``files`` (the filtered ``output``), or None.
        resume: continue the run that wrote these files.
        flag: how the command line names ``output``, for messages.
    """

    def __init__(self, output: str, input: str, files: Sequence[str], *, final: str | None = None,
                 resume: bool = False, flag: str = "--output"):
        self.output, self.input, self.files, self.final = output, input, list(files), final
        self.resume, self.flag = resume, flag
        self.record_path = output + RECORD_SUFFIX
        self.lock_path = output + LOCK_SUFFIX

    @property
    def written(self) -> list[str]:
        """Every path this job may create or replace."""
        extra = [self.final, self.final + ".tmp"] if self.final else []
        return [*self.files, *extra, self.record_path, self.lock_path]

    def check(self) -> None:
        """Every path, before anything loads: folder, not the input, not already holding data."""
        check_writable(self.output, self.flag)
        for path in self.written:
            if same_file(path, self.input):
                raise ConfigError(
                    f"{self.flag} {self.output} would write {path}, which is the input {self.input}; "
                    "the input is never written: pick another output path"
                )
        if not self.resume:
            for path in [*self.files, *([self.final] if self.final else [])]:
                if _holds_data(path):
                    raise ConfigError(
                        f"{path} already exists; pass --resume to continue the run that wrote it, or remove it, or pick "
                        "another output path (an output is never overwritten)"
                    )

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold every file this job writes exclusively, by its real identity; a second process on any of
        them, by any name (a symlink, a hard link, ``OUT.scored.jsonl`` beside a filtering run), is refused at once."""
        held = hold_files([*self.files, *([self.final] if self.final else [])], self.output, create=self.files)
        try:
            yield
        finally:
            held.release()

    def start(self, record: RunRecord) -> dict[int, str]:
        """Under the lock: check the run record, start or reopen the files; returns the rows done,
        index -> row_id (empty unless resuming)."""
        self.check()  # again, under the lock: another run may have written since
        before = read_record(self.record_path)
        holds_rows = any(_holds_data(p) for p in [*self.files, *([self.final] if self.final else [])])
        if self.resume and before is None and holds_rows:
            raise ConfigError(
                f"{self.output} holds rows but no {self.record_path} saying which model and options wrote them, so a resume "
                "could mix two runs' scores; remove it and score again, or pick another output path"
            )
        if self.resume and before is not None and holds_rows:
            changes = record.differences(before)
            if changes:
                raise ConfigError(
                    f"--resume would mix two runs in {self.output}: " + "; ".join(changes)
                    + ". Resume with what the first run used, or pick another output path"
                )
        done = read_done(self.files) if self.resume else {}
        for path in self.files:
            if not self.resume or not os.path.exists(path):
                open(path, "w").close()
        write_record(self.record_path, record)
        return done


def hold_lock(lock_path: str, output: str):
    """An exclusive lock on ``lock_path`` (filelock; the OS drops it when the process dies, so a
    killed run never blocks its resume), taken at once or refused; ``.release()`` it when done.
    The file stays: removing it would let two writers lock different files."""
    lock = _try_lock(lock_path)
    if lock is None:
        raise ConfigError(
            f"{output} is being written by another run (it holds {lock_path}); two runs on one output would "
            "write every row twice. Wait for it to finish (then --resume if it stopped early), or pick another output path"
        )
    return lock


def _try_lock(lock_path: str):
    """``lock_path``'s exclusive lock if it can be had at once, else None (another process holds it)."""
    from filelock import FileLock, Timeout

    lock = FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock


class _Held:
    """Locks held together, released together."""

    def __init__(self):
        self.locks, self.fds = [], []

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)  # drops its flock
        for lock in self.locks:
            lock.release()
        self.fds, self.locks = [], []


def hold_files(paths: Sequence[str], output: str, create: Sequence[str] = ()) -> _Held:
    """Exclusive locks on ``paths`` by identity: ``REAL.lock`` beside each one's real path (a symlink's
    target, a file that does not exist yet), then an ``flock`` on each file itself (``create``: made
    empty if missing), which a hard link shares. Refused at once, naming ``output``, if another run holds any."""
    held = _Held()
    try:
        for lock_path in dict.fromkeys(os.path.realpath(p) + LOCK_SUFFIX for p in paths):
            held.locks.append(hold_lock(lock_path, output))
        for path in paths:
            if path in create or os.path.exists(path):
                fd = os.open(path, os.O_RDWR | os.O_CREAT if path in create else os.O_RDONLY, 0o666)
                held.fds.append(fd)
                if not _flock(fd, exclusive=True):
                    raise ConfigError(
                        f"{output} is being written by another run ({path} is the same file as one it holds, by another name); "
                        "two runs on one file would write every row twice. Wait for it to finish, or pick another output path"
                    )
    except BaseException:
        held.release()
        raise
    return held


def _flock(fd: int, exclusive: bool) -> bool:
    """An flock taken at once, or False when another process holds it (True where there is no fcntl)."""
    try:
        import fcntl
    except ImportError:  # Windows: the REAL.lock files alone
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def check_input_free(path: str, flag: str = "input") -> None:
    """Refuse to read ``path`` while a run is writing it (``score ... -o w.jsonl`` still going): its rows
    so far are a partial file. Asks its lock files (by the name given and the real one) and its flock."""
    if not os.path.isfile(path):
        return
    for lock_path in dict.fromkeys([path + LOCK_SUFFIX, os.path.realpath(path) + LOCK_SUFFIX]):
        if not os.path.exists(lock_path):
            continue  # never locked: no lock file is made beside the user's input to find out
        lock = _try_lock(lock_path)
        if lock is None:
            raise ConfigError(
                f"the {flag} {path} is being written by another run (it holds {lock_path}); reading it now would score a "
                "partial file. Wait for that run to finish, then run this again"
            )
        lock.release()
    fd = os.open(path, os.O_RDONLY)
    try:
        if not _flock(fd, exclusive=False):
            raise ConfigError(
                f"the {flag} {path} is being written by another run (under this or another name); reading it now would "
                "score a partial file. Wait for that run to finish, then run this again"
            )
    finally:
        os.close(fd)


def check_writable(path: str, flag: str = "--output") -> None:
    """``path`` can be created: its folder exists and is writable, and it is not a folder itself. A
    symlink is followed: a dangling one names where it points."""
    if os.path.islink(path) and not os.path.exists(path):
        target = os.path.realpath(path)
        if not os.path.isdir(os.path.dirname(target)):
            raise ConfigError(
                f"{flag} {path} is a symlink to {target}, whose folder does not exist; create it (mkdir -p "
                f"{os.path.dirname(target)}), or remove the link, or pick another path"
            )
        path = target
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path} is a folder; name a file in it, e.g. {os.path.join(path, 'scored.jsonl')}")
    if not os.path.isdir(folder):
        raise ConfigError(f"{flag} {path}: the folder {folder} does not exist; create it (mkdir -p {folder}) or pick another path")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{flag} {path}: the folder {folder} is not writable; pick another path")


def check_not_input(output: str, input: str, flag: str = "--output") -> None:
    if same_file(output, input):
        raise ConfigError(f"{flag} {output} is the input {input}; the input is never written: pick another output path")


def read_record(path: str) -> RunRecord | None:
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return RunRecord(**json.load(f))
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not a run record rewardbridge wrote; remove it with the output, or pick another output path") from None


def write_record(path: str, record: RunRecord) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record.to_json(), f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_done(paths: Sequence[str]) -> dict[int, str]:
    """The rows ``paths`` already hold, index -> row_id; a half-written last line is dropped.

    A row held twice (two runs that wrote at once) is an error naming its lines: which copy is
    right cannot be told, and resuming would carry the duplicate on.
    """
    done: dict[int, str] = {}
    where: dict[int, str] = {}
    twice: list[str] = []
    for path in paths:
        if not os.path.exists(path):
            continue
        drop_partial_last_line(path)
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                try:
                    identity = json.loads(line)["row_id"]
                    index = int(identity.split(":")[0])
                except (ValueError, KeyError, TypeError, AttributeError):
                    raise InputError(f"{path} line {number} has no row_id: it was not written by rewardbridge score; "
                                     "remove it or drop --resume") from None
                place = f"{os.path.basename(path)} line {number}"
                if index in done:
                    twice.append(f"row {index} at {where[index]} and {place}")
                    continue
                done[index], where[index] = identity, place
    if twice:
        raise InputError(
            f"{paths[0]} holds {len(twice)} row(s) twice ({'; '.join(twice[:3])}{'; ...' if len(twice) > 3 else ''}): two runs "
            "wrote into it at once. Nothing was changed; remove the output and score again, or keep the first line of each "
            "row_id and --resume"
        )
    return done


def drop_partial_last_line(path: str) -> None:
    """A run killed mid-write leaves a last line without its newline: that row was not finished."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _holds_data(path: str) -> bool:
    return os.path.isfile(path) and os.path.getsize(path) > 0


def same_file(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _shown(values: dict, key: str) -> str:
    return repr(values[key]) if key in values else "unset"
