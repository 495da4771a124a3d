"""``jobs/output.py``: `rewardbridge score` never destroys or mixes data.

Every mode (plain, --best-of-n, --min-zscore, --option normalize=...) refuses an output that
is the input or already holds rows, before any weights load; a resume by another model,
other options or other settings is refused naming what changed; two runs on one output
(real processes) never write a row twice; a resume finds rows held twice.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewardbridge import load_reward
from rewardbridge.errors import ConfigError, InputError
from rewardbridge.jobs.output import JobOutput, RunRecord, read_record
from rewardbridge.jobs.score import score_file

MODES = {
    "plain": {},
    "best-of-n": {"best_of_n": 2},
    "min-zscore": {"min_zscore": 0.0},
    "normalize": {"options": {"normalize": "zscore"}},
}


def rows_file(path: Path, n: int = 6) -> Path:
    # Two responses per prompt, so the filters have groups to compare.
    path.write_text("".join(json.dumps({"prompt": f"Q{i // 2}: what is {i // 2}+1?", "completion": f"answer {i}"}) + "\n"
                            for i in range(n)))
    return path


def lines(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("mode", MODES)
def test_an_output_that_is_the_input_is_refused_in_every_mode(mode, classifier_dir, tmp_path, no_weights):
    data = rows_file(tmp_path / "rows.jsonl")
    before = data.read_bytes()
    with pytest.raises(ConfigError, match="is the input .*never written"):
        score_file(classifier_dir, str(data), str(data), **MODES[mode])
    assert data.read_bytes() == before  # and no weights loaded (no_weights)


@pytest.mark.parametrize("mode", MODES)
def test_an_existing_output_is_never_overwritten_in_any_mode(mode, classifier_dir, tmp_path, no_weights):
    data = rows_file(tmp_path / "rows.jsonl")
    out = tmp_path / "kept.jsonl"
    out.write_text('{"precious": true}\n')
    with pytest.raises(ConfigError, match="kept.jsonl already exists; pass --resume"):
        score_file(classifier_dir, str(data), str(out), **MODES[mode])
    assert out.read_text() == '{"precious": true}\n'


@pytest.mark.parametrize("output, words", [
    ("no/such/folder/out.jsonl", ["the folder", "does not exist", "mkdir -p"]),
    (".", ["is a folder", "name a file in it"]),
])
def test_output_paths_are_checked_before_any_weights(output, words, classifier_dir, tmp_path, no_weights, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = rows_file(tmp_path / "rows.jsonl")
    with pytest.raises(ConfigError) as caught:
        score_file(classifier_dir, str(data), output)
    for word in words:
        assert word in str(caught.value)


@pytest.fixture(scope="module")
def scored(classifier_dir, tmp_path_factory):
    """One finished run: its input and output, to resume against."""
    folder = tmp_path_factory.mktemp("scored")
    data, out = rows_file(folder / "rows.jsonl"), folder / "out.jsonl"
    score_file(classifier_dir, str(data), str(out), reward=load_reward(classifier_dir))
    return data, out


def test_the_run_record_says_what_produced_the_output(scored, classifier_dir):
    data, out = scored
    record = read_record(str(out) + ".run.json")
    assert record.source == os.path.abspath(classifier_dir) and record.input == str(data)
    assert record.options == {} and record.settings == {"best_of_n": None, "min_zscore": None, "steerlm_labels": False}


# (id, what the resume changes, the words naming the change)
RESUME_CHANGES = [
    ("option", {"options": {"max_length": 64}}, ["options.max_length: unset -> 64"]),
    ("normalize", {"options": {"normalize": "center"}}, ["options.normalize: unset -> 'center'"]),
    ("model", {"source": "plain"}, ["source: ", "plain"]),
    ("filter", {"best_of_n": 2}, ["settings.best_of_n: None -> 2"]),
    ("labels", {"options": {"render": "steerlm"}}, ["options.render: unset -> 'steerlm'"]),
]


@pytest.mark.parametrize("change, words", [row[1:] for row in RESUME_CHANGES], ids=[row[0] for row in RESUME_CHANGES])
def test_a_resume_that_would_mix_two_runs_is_refused_naming_what_changed(request, scored, classifier_dir, change, words):
    data, out = scored
    before = out.read_bytes()
    change = dict(change)
    source = request.getfixturevalue("plain_tokenizer_classifier_dir") if change.pop("source", None) else classifier_dir
    with pytest.raises(ConfigError) as caught:
        score_file(source, str(data), str(out), resume=True, **change)
    message = str(caught.value)
    assert "--resume would mix two runs" in message
    for word in words:
        assert word in message, message
    assert out.read_bytes() == before


def test_a_resume_may_change_how_scores_are_fetched(scored, classifier_dir):
    data, out = scored
    # name and max_tokens_per_batch change no score: resuming with them finds every row done.
    summary = score_file(classifier_dir, str(data), str(out), resume=True, options={"name": "other", "max_tokens_per_batch": 99})
    assert (summary["resumed"], summary["scored"]) == (6, 0)


def test_a_resume_without_a_record_is_refused(classifier_dir, tmp_path, scored):
    data, out = scored
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(out.read_bytes())  # rows, but no copy.jsonl.run.json
    with pytest.raises(ConfigError, match="no .*copy.jsonl.run.json saying which model"):
        score_file(classifier_dir, str(data), str(copy), resume=True)


def test_a_resume_finds_rows_written_twice(classifier_dir, tmp_path, scored):
    data, out = scored
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_bytes(out.read_bytes() * 2)  # what two runs at once used to leave
    (tmp_path / "doubled.jsonl.run.json").write_bytes(Path(str(out) + ".run.json").read_bytes())
    before = doubled.read_bytes()
    with pytest.raises(InputError, match=r"holds 6 row\(s\) twice \(row 0 at doubled.jsonl line 1 and doubled.jsonl line 7"):
        score_file(classifier_dir, str(data), str(doubled), resume=True)
    assert doubled.read_bytes() == before


def cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "rewardbridge.cli", "score", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_held_output_stops_a_second_process_at_once(classifier_dir, tmp_path):
    data = rows_file(tmp_path / "rows.jsonl")
    out = tmp_path / "out.jsonl"
    job = JobOutput(str(out), str(data), [str(out)])
    with job.locked():  # this process holds the output, as a running score does
        process = cli(classifier_dir, str(data), "-o", str(out))
        _, err = process.communicate(timeout=120)
    assert process.returncode == 2 and "is being written by another run" in err, err
    assert not out.exists() or out.read_text() == ""


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_two_processes_on_one_output_never_write_a_row_twice(classifier_dir, tmp_path, resume):
    n = 400
    data = rows_file(tmp_path / "rows.jsonl", n)
    out = tmp_path / "out.jsonl"
    if resume:  # a run that stopped after 5 rows, resumed by two processes at once
        score_file(classifier_dir, str(rows_file(tmp_path / "first.jsonl", 5)), str(tmp_path / "first.jsonl.out"),
                   reward=load_reward(classifier_dir))
        out.write_bytes((tmp_path / "first.jsonl.out").read_bytes())
        record = read_record(str(tmp_path / "first.jsonl.out.run.json"))
        record = RunRecord(record.command, record.source, record.options, str(data), record.settings)
        Path(str(out) + ".run.json").write_text(json.dumps(record.to_json()))
    flags = ["--batch-size", "1"] + (["--resume"] if resume else [])
    first = cli(classifier_dir, str(data), "-o", str(out), *flags)
    time.sleep(0.05)
    second = cli(classifier_dir, str(data), "-o", str(out), *flags)
    results = [(p.wait(timeout=300), p.stderr.read()) for p in (first, second)]
    for code, err in results:
        # Each either wrote, or was refused: the other holds the output, or it already exists.
        assert code == 0 or (code == 2 and ("being written by another run" in err or "already exists" in err)), err
    if not resume:
        assert sorted(code for code, _ in results) == [0, 2]
    ids = [row["row_id"] for row in lines(out)]
    assert len(ids) == len(set(ids)) == n  # every row once: 400 rows, 400 lines
