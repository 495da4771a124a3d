"""Where ``rewardbridge pairs`` writes, safely: never over another run's files, one writer at a
time, resumable by row identity after a crash or a SIGKILL.

Files, beside OUT:

- ``OUT``: the pairs (``prompt``, ``chosen``, ``rejected``, ``chosen_reward``, ``rejected_reward``,
  ``margin``, ``row_id``), what DPOTrainer / RPOTrainer read;
- ``OUT.responses.jsonl``: every prompt's scored responses and which two made its pair (or why
  none did). It is written first, so it is the record of which rows are done;
- ``OUT.rejects.jsonl``: malformed rows, with ``--on-bad-row skip``;
- ``OUT.run.json``: what produced them (policy, engine, reward and its options, sampling, N,
  min-margin); a resume with other settings is refused, except the ones that only choose
  among the scored responses (``min_margin``, ``drop_truncated``): then every prompt's pair is
  chosen again from the responses file, and nothing is sampled again;
- ``OUT.lock``: an exclusive lock held while a run writes (``output.hold_lock``, the lock every
  job's output takes; the OS drops it when the process dies, so a killed run never blocks its resume).

A kill between a row's responses line and its pair line loses nothing: the resume writes the
pair again from the responses file. A last line cut off mid-write is dropped and redone. Files
that hold no sampled row (a run that stopped at its start) are this job's own to start again
over, with or without ``--resume``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import ConfigError, InputError
from .output import RUNTIME_OPTIONS, check_writable, hold_lock, same_file
from .selection import reselect

SUFFIXES = {"responses": ".responses.jsonl", "rejects": ".rejects.jsonl", "run": ".run.json", "lock": ".lock"}
# Settings that only choose the pair among scored responses: a resume with others re-selects the pairs.
SELECTION = ("min_margin", "drop_truncated")


class PairsOutput:
    """The pairs job's files. ``open(resume)`` returns the rows already done: index -> row_id."""

    def __init__(self, output: str, run: dict[str, Any], inputs: list[str]):
        self.output = output
        self.paths = {"pairs": output, **{k: output + v for k, v in SUFFIXES.items()}}
        self.run = json.loads(json.dumps(run, default=str))  # as it reads back from disk
        self.inputs = inputs
        self._files: dict[str, Any] = {}
        self._lock = None
        self._pending_pairs: list[dict] = []
        self.recovered = 0  # pairs a resume rebuilt from the responses file
        self.reselected = 0  # prompts whose pair a resume chose again (another min_margin or drop_truncated)

    def open(self, resume: bool) -> dict[int, str]:
        """Take the lock, check the run, and (resume) reconcile the files; returns the done rows."""
        check_writable(self.output)
        self._refuse_input_as_output()
        self._lock = hold_lock(self.paths["lock"], self.output)
        if self._started_nothing():  # a run that stopped before its first row: start again over its files
            for name in ("pairs", "responses", "rejects"):
                open(self.paths[name], "w").close()
            self._write_run()
            done: dict[int, str] = {}
        elif not resume:
            for name in ("pairs", "responses", "rejects", "run"):
                path = self.paths[name]
                if os.path.exists(path) and os.path.getsize(path) > 0:
                    raise ConfigError(f"{path} already exists; pass --resume to continue that run, or remove it "
                                      "(rewardbridge pairs never overwrites)")
            self._write_run()
            done = {}
        else:
            self._check_run()
            done = self._reconcile()
            self._write_run()  # a changed selection setting is now the run's
        self._files = {name: open(self.paths[name], "a", encoding="utf-8") for name in ("pairs", "responses", "rejects")}
        return done

    def write_row(self, record: dict[str, Any]) -> None:
        """One finished prompt: its responses line now, its pair (if any) at :meth:`flush`, after it."""
        self._files["responses"].write(_line(record))
        pair = pair_of(record)
        if pair is not None:
            self._pending_pairs.append(pair)

    def write_reject(self, record: dict[str, Any]) -> None:
        self._files["rejects"].write(_line(record))
        self._files["rejects"].flush()

    def flush(self) -> None:
        """End of a batch: responses reach the disk before the pairs they name."""
        self._files["responses"].flush()
        os.fsync(self._files["responses"].fileno())
        for pair in self._pending_pairs:
            self._files["pairs"].write(_line(pair))
        self._pending_pairs.clear()
        self._files["pairs"].flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}
        rejects = self.paths["rejects"]
        if os.path.exists(rejects) and os.path.getsize(rejects) == 0:
            os.remove(rejects)  # no rejects, no file
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def count_pairs(self) -> int:
        with open(self.paths["pairs"], "rb") as f:
            return sum(1 for _ in f)

    # -- checks -----------------------------------------------------------------------------

    def _refuse_input_as_output(self) -> None:
        for path in self.inputs:
            for name, ours in self.paths.items():
                if same_file(ours, path):
                    raise ConfigError(f"--output {self.output} would write over the input {path} (as its {name} file); "
                                      "choose another --output")

    def _started_nothing(self) -> bool:
        """Our own run.json beside files that hold no sampled row (rejects aside): nothing to keep."""
        if not os.path.exists(self.paths["run"]):
            return False
        return not any(os.path.exists(self.paths[n]) and os.path.getsize(self.paths[n]) for n in ("pairs", "responses"))

    def _write_run(self) -> None:
        path = self.paths["run"]
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(self.run, f, indent=1)
        os.replace(path + ".tmp", path)

    def _check_run(self) -> None:
        path = self.paths["run"]
        if not os.path.exists(path):
            if any(os.path.exists(self.paths[n]) and os.path.getsize(self.paths[n]) for n in ("pairs", "responses")):
                raise ConfigError(f"{self.output} has no {path}: it was not written by rewardbridge pairs; remove it or drop --resume")
            return
        with open(path, encoding="utf-8") as f:
            before = json.load(f)
        changed = [f"{key}: {before.get(key)!r} then, {self.run.get(key)!r} now"
                   for key in sorted(set(before) | set(self.run))
                   if key not in ("prompts", "reward_options", *SELECTION) and before.get(key) != self.run.get(key)]
        # The reward's options that change how a score is fetched, not what it is, may change (as for `score`).
        options_then, options_now = ({k: v for k, v in (run.get("reward_options") or {}).items() if k not in RUNTIME_OPTIONS}
                                     for run in (before, self.run))
        if options_then != options_now:
            changed.append(f"reward_options: {options_then!r} then, {options_now!r} now")
        if changed:
            raise ConfigError(f"--resume: {self.output} was made with other settings ({'; '.join(changed)}); "
                              "resume with the same ones, or write to another --output")

    def _reconcile(self) -> dict[int, str]:
        """Rows done (responses + rejects); OUT made to hold exactly the pairs the responses file names.

        A pair missing from OUT (killed between the two writes) is written now. When the pairs are
        chosen again (another ``min_margin`` / ``drop_truncated``), or OUT disagrees with the
        responses file (a kill in the middle of that), both files are rewritten from the records.
        """
        records = _read_lines(self.paths["responses"])
        done: dict[int, str] = {}
        for number, record in records:
            _remember(done, record, self.paths["responses"], number)
        for number, record in _read_lines(self.paths["rejects"]):
            _remember(done, record, self.paths["rejects"], number)
        pairs: dict[str, dict] = {}
        for number, pair in _read_lines(self.paths["pairs"]):
            row_id = pair.get("row_id")
            if row_id in pairs:
                raise InputError(f"{self.output} line {number} repeats the pair of row {row_id}: two runs wrote it, or it was "
                                 "edited; remove the output or write to another --output")
            if row_id not in done.values():
                raise InputError(f"{self.output} line {number} (row {row_id}) is not in {self.paths['responses']}: the files "
                                 "do not belong together; remove them or write to another --output")
            pairs[row_id] = pair
        chosen = [reselect(record, self.run.get("min_margin", 0.0), bool(self.run.get("drop_truncated"))) for _, record in records]
        self.reselected = sum(new is not old for new, (_, old) in zip(chosen, records))
        expected = {r["row_id"]: pair for r in chosen if (pair := pair_of(r)) is not None}
        if self.reselected or any(expected.get(row_id) != pair for row_id, pair in pairs.items()):
            self._rewrite(chosen)
            return done
        missing = [pair for row_id, pair in expected.items() if row_id not in pairs]
        with open(self.paths["pairs"], "a", encoding="utf-8") as f:
            for pair in missing:  # killed between the two writes: the pair is rebuilt, not lost
                f.write(_line(pair))
        self.recovered = len(missing)
        return done

    def _rewrite(self, records: list[dict]) -> None:
        """The responses file (the record) replaced whole, then OUT rebuilt from it; a kill between the
        two leaves OUT disagreeing with the records, which the next resume rebuilds again."""
        for name, lines in (("responses", records), ("pairs", [p for r in records if (p := pair_of(r)) is not None])):
            path = self.paths[name]
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.writelines(_line(line) for line in lines)
                f.flush()
                os.fsync(f.fileno())
            os.replace(path + ".tmp", path)


def pair_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """A responses record's pair, in TRL's preference format (chat prompts: assistant messages).

    >>> pair_of({"row_id": "0:ab", "prompt": "2+2=", "chat": False, "chosen": 1, "rejected": 0,
    ...          "responses": [{"text": " 5", "reward": -1.0}, {"text": " 4", "reward": 2.0}]})["chosen"]
    ' 4'
    """
    if record.get("chosen") is None:
        return None
    chosen, rejected = record["responses"][record["chosen"]], record["responses"][record["rejected"]]

    def completion(text: str):
        return [{"role": "assistant", "content": text}] if record["chat"] else text

    return {"prompt": record["prompt"], "chosen": completion(chosen["text"]), "rejected": completion(rejected["text"]),
            "chosen_reward": chosen["reward"], "rejected_reward": rejected["reward"],
            "margin": chosen["reward"] - rejected["reward"], "row_id": record["row_id"]}


def _remember(done: dict[int, str], record: dict, path: str, number: int) -> None:
    row_id = record.get("row_id")
    if not isinstance(row_id, str) or ":" not in row_id:
        raise InputError(f"{path} line {number} has no row_id: it was not written by rewardbridge pairs; remove it or drop --resume")
    index = int(row_id.split(":")[0])
    if index in done:
        raise InputError(f"{path} line {number} repeats row {row_id}: two runs wrote it, or it was edited; "
                         "remove the output or write to another --output")
    done[index] = row_id


def _read_lines(path: str) -> list[tuple[int, dict]]:
    """A file's JSON lines; a last line cut off mid-write (no newline) is dropped from the file."""
    if not os.path.exists(path):
        return []
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
            data = data[: data.rfind(b"\n") + 1]
    out = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        try:
            out.append((number, json.loads(line)))
        except json.JSONDecodeError:
            raise InputError(f"{path} line {number} is not JSON: it was not written by rewardbridge pairs; "
                             "remove it or drop --resume") from None
    return out


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"
