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


# -- issue 15 review 2, 5: one file by any name --------------------------------------------------

def _alias(kind: str, tmp_path: Path, out: Path) -> tuple[JobOutput, Path]:
    """(the job a first run holds, the name a second run is given for one of its files)."""
    data = tmp_path / "rows.jsonl"
    if kind == "scored-beside-best-of-n":  # `--best-of-n 1 -o out` scores into out.scored.jsonl
        job = JobOutput(str(out), str(data), [str(out) + ".scored.jsonl", str(out) + ".rejects.jsonl"], final=str(out))
        return job, Path(str(out) + ".scored.jsonl")
    job = JobOutput(str(out), str(data), [str(out), str(out) + ".rejects.jsonl"])
    alias = tmp_path / f"{kind}.jsonl"
    return job, alias


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "scored-beside-best-of-n"])
def test_a_second_name_for_a_held_output_is_refused(kind, classifier_dir, tmp_path):
    data = rows_file(tmp_path / "rows.jsonl")
    out = tmp_path / "out.jsonl"
    job, alias = _alias(kind, tmp_path, out)
    with job.locked():  # this process is the first run, writing out.jsonl
        if kind == "symlink":
            alias.symlink_to(out)
        elif kind == "hardlink":
            os.link(out, alias)  # the file exists: locked() created it
        process = cli(classifier_dir, str(data), "-o", str(alias))  # the second run, a real process
        _, err = process.communicate(timeout=120)
    # Before: the lock was `alias + ".lock"`, a different file, and both wrote every row into one file.
    assert process.returncode == 2 and "is being written by another run" in err, err
    assert out.read_text() == "" if kind != "scored-beside-best-of-n" else True


@pytest.mark.parametrize("command", ["score", "eval", "pairs"])
def test_an_input_another_run_is_writing_is_refused(command, classifier_dir, causal_dir, tmp_path):
    partial = tmp_path / "w.jsonl"
    job = JobOutput(str(partial), str(tmp_path / "rows.jsonl"), [str(partial)])
    with job.locked():  # `score ... -o w.jsonl` still running
        partial.write_text(json.dumps({"prompt": "Q?", "chosen": "A.", "rejected": "B."}) + "\n")
        argv = {"score": ["score", classifier_dir, str(partial), "-o", str(tmp_path / "w2.jsonl")],
                "eval": ["eval", classifier_dir, str(partial)],
                "pairs": ["pairs", causal_dir, str(partial), "--reward", classifier_dir, "-o", str(tmp_path / "w2.jsonl")]}[command]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        process = subprocess.run([sys.executable, "-m", "rewardbridge.cli", *argv], env=env, capture_output=True, text=True,
                                 timeout=120)
    assert process.returncode == 2 and "is being written by another run" in process.stderr, process.stderr
    assert "partial file" in process.stderr and not (tmp_path / "w2.jsonl").exists()


# -- issue 15 review 3, 27: the model, not its path ------------------------------------------------

def _copy_model(src: str, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("change, words", [
    ("weights-replaced", ["model.model.safetensors:"]),
    ("config-edited", ["model.config.json: 'sha256:"]),
    ("symlink-retargeted", ["model.path:", "model.model.safetensors"]),
    ("dtype-differs", ["model.dtype: 'bfloat16' -> 'float32'"]),  # dtype='auto' resolved on another device
])
def test_a_resume_on_other_weights_at_the_same_path_is_refused(change, words, classifier_dir, plain_tokenizer_classifier_dir, tmp_path):
    data = rows_file(tmp_path / "rows.jsonl")
    first = _copy_model(classifier_dir, tmp_path / "first")
    link = tmp_path / "model"
    link.symlink_to(first)
    out = tmp_path / "out.jsonl"
    score_file(str(link), str(data), str(out))
    record = read_record(str(out) + ".run.json")
    assert record.model["path"] == str(first) and record.model["dtype"] == "float32"  # the real folder, the resolved dtype
    before = out.read_bytes()
    if change == "weights-replaced":
        weights = first / "model.safetensors"
        weights.write_bytes((Path(plain_tokenizer_classifier_dir) / "model.safetensors").read_bytes())
    elif change == "config-edited":
        config = json.loads((first / "config.json").read_text())
        (first / "config.json").write_text(json.dumps({**config, "pad_token_id": 0}))
    elif change == "symlink-retargeted":
        link.unlink()
        link.symlink_to(_copy_model(plain_tokenizer_classifier_dir, tmp_path / "second"))
    else:
        saved = json.loads(Path(str(out) + ".run.json").read_text())
        saved["model"]["dtype"] = "bfloat16"
        Path(str(out) + ".run.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError) as caught:
        score_file(str(link), str(data), str(out), resume=True)
    message = str(caught.value)
    assert "--resume would mix two runs" in message and all(word in message for word in words), message
    assert out.read_bytes() == before


def test_a_resume_on_the_same_weights_finds_every_row_done(classifier_dir, tmp_path):
    data = rows_file(tmp_path / "rows.jsonl")
    out = tmp_path / "out.jsonl"
    score_file(classifier_dir, str(data), str(out))
    assert score_file(classifier_dir, str(data), str(out), resume=True)["resumed"] == 6  # the fingerprint is stable


@pytest.mark.parametrize("first, then", [("real", "link"), ("link", "real"), ("link", "link")])
def test_a_run_and_its_resume_find_one_record_through_a_symlink(first, then, classifier_dir, tmp_path):
    # Hostile check: the locks followed the link, the side files did not ("holds rows but no link.jsonl.run.json").
    data = rows_file(tmp_path / "rows.jsonl")
    real, link = tmp_path / "out.jsonl", tmp_path / "link.jsonl"
    link.symlink_to(real)
    names = {"real": str(real), "link": str(link)}
    score_file(classifier_dir, str(data), names[first])
    assert score_file(classifier_dir, str(data), names[then], resume=True)["resumed"] == 6
    assert sorted(p.name for p in tmp_path.glob("*.run.json")) == ["out.jsonl.run.json"] and link.is_symlink()
    assert len(real.read_text().splitlines()) == 6


# -- issue 15 review 4: a report that appeared while eval ran -------------------------------------

def test_eval_never_overwrites_a_report_that_appeared_while_it_ran(classifier_dir, tmp_path):
    from rewardbridge.jobs.evaluate import evaluate_file

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "Q?", "chosen": "A.", "rejected": "B.", "subset": "mine"}) + "\n")
    report = tmp_path / "report.json"
    reward = load_reward(classifier_dir)
    score = reward.scorer.score

    def score_then_another_writes(conversations):  # another run writes the report while this one scores
        report.write_text('{"theirs": true}\n')
        return score(conversations)

    reward.scorer.score = score_then_another_writes
    with pytest.raises(ConfigError, match=r"report.json appeared while eval ran .* was not overwritten; this run's report is in "):
        evaluate_file(classifier_dir, str(data), output=str(report), reward=reward)
    assert report.read_text() == '{"theirs": true}\n'  # before: replaced by open("w") at the end
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("report.json.") and p.name.endswith(".tmp")]
    assert len(kept) == 1 and "accuracy" in kept[0].read_text()
