"""``rewardbridge score``: every input format and row format, filters, bad rows, resume after a kill."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewardbridge import Conversation, load_reward
from rewardbridge.cli import main
from rewardbridge.conversation import parse_flattened_turns
from rewardbridge.errors import ConfigError, InputError
from rewardbridge.jobs.rows import read_rows
from rewardbridge.jobs.formats import steerlm_label
from rewardbridge.jobs.score import score_file, select_rows

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def reward(classifier_dir):
    return load_reward(classifier_dir)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def jsonl_rows(name):
    return read_jsonl(DATA / name)


@pytest.fixture(scope="module")
def input_files(tmp_path_factory):
    """The same prompt/completion rows in every input format: three committed, two built here."""
    from datasets import Dataset

    folder = tmp_path_factory.mktemp("formats")
    dataset = Dataset.from_list(jsonl_rows("prompt_completion.jsonl"))
    dataset.to_parquet(str(folder / "rows.parquet"))
    dataset.save_to_disk(str(folder / "saved"))
    return {
        "jsonl": DATA / "prompt_completion.jsonl",
        "json": DATA / "prompt_completion.json",
        "csv": DATA / "prompt_completion.csv",
        "parquet": folder / "rows.parquet",
        "save_to_disk": folder / "saved",
    }


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "save_to_disk"])
def test_every_input_format_scores_the_same(fmt, input_files, reward, classifier_dir, tmp_path):
    rows = jsonl_rows("prompt_completion.jsonl")
    expected = reward(prompts=[r["prompt"] for r in rows], completions=[r["completion"] for r in rows])
    out = tmp_path / "scored.jsonl"
    summary = score_file(classifier_dir, str(input_files[fmt]), str(out), reward=reward, batch_size=4)
    got = read_jsonl(out)
    assert summary["rows"] == summary["scored"] == summary["written"] == len(rows) == 9
    assert [{k: g[k] for k in ("prompt", "completion")} for g in got] == rows  # input order and columns kept
    assert [g["reward"] for g in got] == pytest.approx(expected, abs=1e-5)
    assert [g["row_id"] for g in got] == [r.row_id for r in read_rows(str(input_files[fmt]))]


def test_conversational_rows_score_as_trl_passes_them(reward, classifier_dir, tmp_path):
    rows = jsonl_rows("conversational.jsonl")
    score_file(classifier_dir, str(DATA / "conversational.jsonl"), str(tmp_path / "o.jsonl"), reward=reward)
    expected = reward(prompts=[r["prompt"] for r in rows], completions=[r["completion"] for r in rows])
    assert [g["reward"] for g in read_jsonl(tmp_path / "o.jsonl")] == pytest.approx(expected, abs=1e-5)


def test_preference_rows_get_chosen_rejected_and_margin(reward, classifier_dir, tmp_path):
    score_file(classifier_dir, str(DATA / "preference.jsonl"), str(tmp_path / "o.jsonl"), reward=reward)
    got = read_jsonl(tmp_path / "o.jsonl")
    rows = jsonl_rows("preference.jsonl")
    for row, out in zip(rows[:2], got[:2]):  # explicit prompt
        chosen, rejected = reward(prompts=[row["prompt"]] * 2, completions=[row["chosen"], row["rejected"]])
        assert (out["chosen_reward"], out["rejected_reward"]) == pytest.approx((chosen, rejected), abs=1e-5)
        assert out["margin"] == pytest.approx(chosen - rejected, abs=1e-5)  # margin = chosen - rejected
    # Implicit prompt (TRL): the shared leading user turn is the prompt, the rest the completions.
    row = rows[2]
    chosen, rejected = reward(prompts=[row["chosen"][:1]] * 2, completions=[row["chosen"][1:], row["rejected"][1:]])
    assert (got[2]["chosen_reward"], got[2]["rejected_reward"]) == pytest.approx((chosen, rejected), abs=1e-5)


def test_helpsteer2_multi_turn_prompts_are_parsed_back_into_turns(reward, classifier_dir, tmp_path):
    score_file(classifier_dir, str(DATA / "helpsteer2.jsonl"), str(tmp_path / "o.jsonl"), reward=reward)
    got = read_jsonl(tmp_path / "o.jsonl")
    single, multi = jsonl_rows("helpsteer2.jsonl")
    assert got[0]["reward"] == pytest.approx(reward(prompts=[single["prompt"]], completions=[single["response"]])[0], abs=1e-5)
    turns = parse_flattened_turns(multi["prompt"])  # user, assistant, user
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    expected = reward(prompts=[turns], completions=[[{"role": "assistant", "content": multi["response"]}]])[0]
    assert got[1]["reward"] == pytest.approx(expected, abs=1e-5)
    assert got[1]["helpfulness"] == 4  # the row's own columns are kept


def test_nemo_aligner_turns_get_labels(attributes_dir, tmp_path):
    names, weights = ["helpfulness", "correctness", "coherence"], [0.3, 0.74, 0.46]
    steer = load_reward(attributes_dir, attributes=names, attribute_weights=weights)
    rows = jsonl_rows("nemo_aligner.jsonl")
    for labels, path in ((False, tmp_path / "floats.jsonl"), (True, tmp_path / "steerlm.jsonl")):
        score_file(attributes_dir, str(DATA / "nemo_aligner.jsonl"), str(path), reward=steer, steerlm_labels=labels)
    floats, steerlm = read_jsonl(tmp_path / "floats.jsonl"), read_jsonl(tmp_path / "steerlm.jsonl")
    # Row 2: each Assistant turn is scored with the turns before it (system prompt included).
    system = {"role": "system", "content": "You are terse."}
    turns = [{"role": "user" if t["from"] == "User" else "assistant", "content": t["value"]} for t in rows[1]["conversations"]]
    for k, context in ((1, [system, turns[0]]), (3, [system, *turns[:3]])):
        scores = steer.scorer.score(
            [Conversation.from_trl(context, [turns[k]])]
        )
        values = {n: scores.attributes[n][0].item() for n in names}
        assert floats[1]["conversations"][k]["label"] == ",".join(f"{n}:{values[n]:.4f}" for n in names)
        # SteerLM training labels: clamp to [0, 4], then round halves up.
        assert steerlm[1]["conversations"][k]["label"] == ",".join(
            f"{n}:{math.floor(min(4, max(0, values[n])) + 0.5)}" for n in names
        )
    assert floats[1]["conversations"][0]["label"] is None  # User turns keep their labels
    assert floats[1]["reward"] == pytest.approx(
        sum(w * float(v.split(":")[1]) for w, v in zip(weights, floats[1]["conversations"][3]["label"].split(","))), abs=1e-3
    )  # the row's reward is the last Assistant turn's weighted sum (labels carry 4 decimals)


@pytest.mark.parametrize(
    "value, label",
    [(4.6, "4"), (3.5, "4"), (2.5, "3"), (2.49, "2"), (-0.7, "0"), (0.5, "1")],  # clamp to [0, 4], halves up
)
def test_steerlm_labels_are_clamped_and_rounded(value, label):
    assert steerlm_label({"helpfulness": value}, None, steerlm=True) == f"helpfulness:{label}"


def test_select_rows_on_a_hand_computed_case():
    keys, rewards = ["a", "a", "a", "b", "c", "c"], [1.0, 2.0, 6.0, 5.0, 3.0, None]
    # Prompt a: mean 3, sample std sqrt((4 + 1 + 9) / 2) = sqrt(7) = 2.6458 -> z = -0.756, -0.378, 1.134.
    keep, z = select_rows(keys, rewards, best_of_n=None, min_zscore=-0.5)
    assert keep == [1, 2, 3, 4]  # b and c have one valid response: z = 0; None is never kept
    assert [z[0], z[1], z[2]] == pytest.approx([-2 / 7**0.5, -1 / 7**0.5, 3 / 7**0.5], abs=1e-6)
    assert select_rows(keys, rewards, best_of_n=2, min_zscore=None)[0] == [1, 3, 4]  # best of a's first two is 2.0
    assert select_rows(keys, rewards, best_of_n=3, min_zscore=None)[0] == [2, 3, 4]


def test_best_of_n_and_min_zscore_filter_the_output(reward, classifier_dir, tmp_path):
    rows = jsonl_rows("prompt_completion.jsonl")
    rewards = reward(prompts=[r["prompt"] for r in rows], completions=[r["completion"] for r in rows])
    best = tmp_path / "best.jsonl"
    summary = score_file(classifier_dir, str(DATA / "prompt_completion.jsonl"), str(best), reward=reward, best_of_n=3)
    # Three prompts x three responses: the best-scored response of each prompt.
    winners = [max(range(3 * p, 3 * p + 3), key=lambda i: rewards[i]) for p in range(3)]
    assert [r["completion"] for r in read_jsonl(best)] == [rows[i]["completion"] for i in winners]
    assert summary["written"] == 3 and len(read_jsonl(str(best) + ".scored.jsonl")) == 9
    above = tmp_path / "above.jsonl"
    score_file(classifier_dir, str(DATA / "prompt_completion.jsonl"), str(above), reward=reward, min_zscore=0.0)
    # z >= 0 exactly when the reward is at least its prompt's mean.
    means = [sum(rewards[3 * (i // 3): 3 * (i // 3) + 3]) / 3 for i in range(9)]
    assert [r["completion"] for r in read_jsonl(above)] == [rows[i]["completion"] for i in range(9) if rewards[i] >= means[i]]
    assert all(r["zscore"] >= 0 for r in read_jsonl(above))
    with pytest.raises(ConfigError, match="compare one response per row"):
        score_file(classifier_dir, str(DATA / "preference.jsonl"), str(tmp_path / "p.jsonl"), reward=reward, best_of_n=2)


@pytest.fixture
def bad_input(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"prompt": "What is 2+2?", "completion": "4"}),
        json.dumps({"prompt": "What is 3+3?", "completion": "6"}),
        '{"prompt": "broken", "completion": ',  # line 3: malformed JSON
        "",  # line 4: blank, not a row
        json.dumps({"question": "no known columns"}),  # line 5
        json.dumps({"prompt": "What is 4+4?", "completion": "8"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_row_stops_with_its_line_number(reward, classifier_dir, bad_input, tmp_path):
    with pytest.raises(InputError, match=r"bad.jsonl line 3: not valid JSON .* --on-bad-row skip"):
        score_file(classifier_dir, str(bad_input), str(tmp_path / "o.jsonl"), reward=reward, batch_size=1)
    assert len(read_jsonl(tmp_path / "o.jsonl")) == 2  # rows before it were written as they went
    assert not os.path.exists(tmp_path / "o.jsonl.rejects.jsonl")  # nothing rejected, no file


def test_bad_rows_skipped_into_the_rejects_file(reward, classifier_dir, bad_input, tmp_path):
    out = tmp_path / "o.jsonl"
    summary = score_file(classifier_dir, str(bad_input), str(out), reward=reward, on_bad_row="skip")
    assert (summary["scored"], summary["rejected"]) == (3, 2)
    rejects = read_jsonl(str(out) + ".rejects.jsonl")
    assert [r["where"] for r in rejects] == ["line 3", "line 5"]
    assert "not valid JSON" in rejects[0]["reason"] and "expected prompt/completion" in rejects[1]["reason"]
    assert rejects[1]["row"] == {"question": "no known columns"}
    assert [r["completion"] for r in read_jsonl(out)] == ["4", "6", "8"]


def test_cli_reports_a_bad_row_in_one_line(classifier_dir, bad_input, tmp_path, capsys):
    code = main(["score", classifier_dir, str(bad_input), "--output", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert code == 1 and "rewardbridge: error: " in err and "line 3: not valid JSON" in err


def test_empty_input_writes_an_empty_output(classifier_dir, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code = main(["score", classifier_dir, str(empty), "--output", str(tmp_path / "o.jsonl")])
    assert code == 0 and (tmp_path / "o.jsonl").read_text() == ""
    assert "0 rows" in capsys.readouterr().err


def test_existing_output_needs_resume(reward, classifier_dir, tmp_path):
    out = tmp_path / "o.jsonl"
    score_file(classifier_dir, str(DATA / "conversational.jsonl"), str(out), reward=reward)
    with pytest.raises(ConfigError, match="already exists; pass --resume"):
        score_file(classifier_dir, str(DATA / "conversational.jsonl"), str(out), reward=reward)


def make_rows(n):
    return [{"prompt": f"Question {i}: what is {i} plus {i}?", "completion": f"The answer is {2 * i}."} for i in range(n)]


def test_resume_after_a_kill_scores_every_row_once(reward, classifier_dir, tmp_path):
    rows = make_rows(200)
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "scored.jsonl"
    command = [sys.executable, "-m", "rewardbridge.cli", "score", classifier_dir, str(source), "--output", str(out),
               "--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.stat().st_size and out.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = out.read_bytes().count(b"\n")
    assert process.returncode == -signal.SIGKILL and 5 <= written < len(rows)  # killed mid-run
    # Also a half-written last line, as a kill during a write leaves.
    with open(out, "a") as f:
        f.write('{"prompt": "Question 99')
    summary = score_file(classifier_dir, str(source), str(out), reward=reward, resume=True, batch_size=64)
    assert summary["resumed"] == written and summary["scored"] == len(rows) - written  # none twice
    got = read_jsonl(out)
    assert [g["row_id"] for g in got] == [r.row_id for r in read_rows(str(source))]  # none lost, in order
    expected = reward(prompts=[r["prompt"] for r in rows], completions=[r["completion"] for r in rows])
    assert [g["reward"] for g in got] == pytest.approx(expected, abs=1e-5)


def test_resume_checks_row_identity_not_line_counts(reward, classifier_dir, tmp_path):
    source, out = tmp_path / "rows.jsonl", tmp_path / "scored.jsonl"
    rows = make_rows(4)
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    score_file(classifier_dir, str(source), str(out), reward=reward)
    rows[1]["completion"] = "edited"  # same number of rows, different content
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=r"line 2 differs from what .* holds"):
        score_file(classifier_dir, str(source), str(out), reward=reward, resume=True)
    # Drop row 2 from the output: resume scores exactly that one and puts nothing twice.
    source.write_text("".join(json.dumps(r) + "\n" for r in make_rows(4)))
    kept = [line for k, line in enumerate(out.read_text().splitlines(keepends=True)) if k != 2]
    out.write_text("".join(kept))
    summary = score_file(classifier_dir, str(source), str(out), reward=reward, resume=True)
    assert (summary["resumed"], summary["scored"]) == (3, 1)
    assert sorted(int(g["row_id"].split(":")[0]) for g in read_jsonl(out)) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"best_of_n": 0}, "--best-of-n must be at least 1"),
        ({"min_zscore": float("nan")}, "--min-zscore must be a finite number"),  # NaN would drop every row
        ({"on_bad_row": "ignore"}, "--on-bad-row 'ignore' is not one of"),
        ({"steerlm_labels": True}, "--steerlm-labels writes labels into NeMo-Aligner conversation rows"),
    ],
)
def test_bad_flags_get_a_clear_error_before_any_output(kwargs, message, reward, classifier_dir, tmp_path):
    with pytest.raises(ConfigError, match=message):
        score_file(classifier_dir, str(DATA / "conversational.jsonl"), str(tmp_path / "o.jsonl"), reward=reward, **kwargs)
    if "steerlm_labels" not in kwargs:  # found while reading rows, after the output started
        assert not (tmp_path / "o.jsonl").exists()


def test_normalize_is_per_prompt_over_the_whole_file(classifier_dir, tmp_path):
    centered = load_reward(classifier_dir, normalize="center", clip=(-0.05, 0.05))
    out = tmp_path / "o.jsonl"
    summary = score_file(classifier_dir, str(DATA / "prompt_completion.jsonl"), str(out), reward=centered, batch_size=2)
    got = read_jsonl(out)
    assert summary["written"] == 9  # normalize alone keeps every row
    for p in range(3):  # three prompts x three responses, split across batches of 2 rows
        group = got[3 * p: 3 * p + 3]
        mean = sum(r["reward"] for r in group) / 3
        for r in group:  # center: reward - its prompt's mean, then clip to [-0.05, 0.05]
            assert r["normalized_reward"] == pytest.approx(min(0.05, max(-0.05, r["reward"] - mean)), abs=1e-6)
    with pytest.raises(ConfigError, match="normalize='reference' .* is for training"):
        score_file(classifier_dir, str(DATA / "prompt_completion.jsonl"), str(tmp_path / "r.jsonl"),
                   reward=load_reward(classifier_dir, normalize="reference", reference_column="ref"))
    with pytest.raises(ConfigError, match="compare one response per row"):
        score_file(classifier_dir, str(DATA / "preference.jsonl"), str(tmp_path / "p.jsonl"), reward=centered)


def test_labelling_needs_no_attribute_weights(attributes_dir, tmp_path):
    labeller = load_reward(attributes_dir, attributes=["helpfulness", "correctness", "coherence"])  # no weights
    out = tmp_path / "o.jsonl"
    score_file(attributes_dir, str(DATA / "nemo_aligner.jsonl"), str(out), reward=labeller, steerlm_labels=True)
    got = read_jsonl(out)
    assert [r["reward"] for r in got] == [None, None]  # no single reward without weights
    labels = [t["label"] for r in got for t in r["conversations"] if t["from"] == "Assistant"]
    assert len(labels) == 3 and all(label.startswith("helpfulness:") and label.count(",") == 2 for label in labels)


# -- issue 15 review 6, 9, 10, 14, 15, 16: what a row's score can be, and what is read first ---------

@pytest.fixture(scope="module")
def nan_on_tilde_dir(tmp_path_factory):
    """A classifier that scores NaN for any text holding '~' (its embedding row is NaN), as a broken
    checkpoint does for some inputs only."""
    from transformers import LlamaForSequenceClassification

    from rewardbridge.testing import build_tokenizer, llama_config, save_model

    tok = build_tokenizer()
    import torch

    torch.manual_seed(0)
    model = LlamaForSequenceClassification(llama_config(tok, num_labels=1))
    (tilde,) = tok("~", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        model.model.embed_tokens.weight[tilde] = float("nan")
    return save_model(tmp_path_factory.mktemp("nan_on_tilde"), model, tok)


def test_a_row_scored_nan_is_a_bad_row_named_by_its_line(nan_on_tilde_dir, tmp_path):
    data = tmp_path / "rows.jsonl"
    rows = [{"prompt": "What is 2+2?", "completion": f"answer {i}"} for i in range(9)]
    rows[7]["completion"] = "answer ~7"  # line 8, the second row of its batch
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(Exception, match=r"rows.jsonl line 8: the reward model scored nan \(reward\): a score must be a finite"):
        score_file(nan_on_tilde_dir, str(data), str(tmp_path / "stop.jsonl"), batch_size=6)  # before: "sample 1"
    out = tmp_path / "skip.jsonl"
    summary = score_file(nan_on_tilde_dir, str(data), str(out), batch_size=6, on_bad_row="skip")
    assert (summary["scored"], summary["rejected"]) == (8, 1)  # the rest of its batch scored again without it
    rejects = read_jsonl(str(out) + ".rejects.jsonl")
    assert [r["where"] for r in rejects] == ["line 8"] and "scored nan" in rejects[0]["reason"]
    assert [r["completion"] for r in read_jsonl(out)] == [r["completion"] for k, r in enumerate(rows) if k != 7]


@pytest.fixture(scope="module")
def loud_attributes_dir(tmp_path_factory):
    """Three attributes of a few hundred each (its head scaled up): finite scores, large ones."""
    import torch
    from transformers import LlamaForSequenceClassification

    from rewardbridge.testing import build_tokenizer, llama_config, save_model

    tok = build_tokenizer()
    torch.manual_seed(1)
    model = LlamaForSequenceClassification(llama_config(tok, num_labels=3))
    with torch.no_grad():
        model.score.weight.mul_(1e4)
    return save_model(tmp_path_factory.mktemp("loud"), model, tok)


def test_a_reward_beyond_float32_is_never_written_as_infinity(loud_attributes_dir, tmp_path):
    attributes_dir = loud_attributes_dir
    weights = [3e38, 3e38, 3e38]  # each within float32; their weighted sum is not
    reward = load_reward(attributes_dir, attributes=["a", "b", "c"], attribute_weights=weights)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": "Q?", "completion": f"A{i}"}) + "\n" for i in range(3)))
    scores = reward.scorer.score([Conversation("Q?", f"A{i}") for i in range(3)]).attributes
    overflows = [i for i in range(3) if abs(sum(w * float(scores[n][i]) for w, n in zip(weights, "abc"))) > 3.4e38]
    assert overflows, "the tiny model's attributes must overflow the weighted sum for this test"
    with pytest.raises(Exception, match=r"line \d: .*after attribute_weights, normalize and clip \(float32"):
        score_file(attributes_dir, str(data), str(tmp_path / "o.jsonl"), reward=reward)
    for line in (tmp_path / "o.jsonl").read_text().splitlines():
        assert "Infinity" not in line and "NaN" not in line  # before: `-Infinity`, which is not JSON
    with pytest.raises(Exception, match="after attribute_weights"):  # and TRL's call: never inf to the trainer
        reward(prompts=["Q?"] * 3, completions=[f"A{i}" for i in range(3)])


@pytest.mark.parametrize("flags", [{"best_of_n": 1}, {"min_zscore": 0.0}, {"options": {"normalize": "zscore"}}],
                         ids=["best-of-n", "min-zscore", "normalize"])
def test_filters_on_an_attributes_only_model_are_refused_before_loading(flags, attributes_dir, tmp_path, no_weights):
    flags = {**flags, "options": {"attributes": ["a", "b", "c"], **flags.get("options", {})}}
    with pytest.raises(ConfigError, match=r"needs one reward per row, but the model gives attributes \['a', 'b', 'c'\].*attribute_weights"):
        # Before: every row dropped (--best-of-n 1 gave 0 rows, exit 0), or normalized to null.
        score_file(attributes_dir, str(DATA / "prompt_completion.jsonl"), str(tmp_path / "o.jsonl"), **flags)


def test_rows_that_failed_under_skip_are_counted_and_scored_again_on_resume(tmp_path, capsys):
    from servers.faulty import FaultyServer

    failing = {"on": True}

    def openrlhf(path, body, headers):  # OpenRLHF's /get_reward; a 500 for a row holding "flaky" while failing
        queries = json.loads(body)["query"]
        if failing["on"] and any("flaky" in q for q in queries):
            return 500, {"Content-Type": "application/json"}, b'{"error": "overloaded"}'
        return 200, {"Content-Type": "application/json"}, json.dumps({"rewards": [len(q) / 10 for q in queries]}).encode()

    server = FaultyServer(openrlhf).start()
    try:
        data = tmp_path / "rows.jsonl"
        data.write_text("".join(json.dumps({"prompt": "Q?", "completion": c}) + "\n" for c in ["a", "flaky", "c"]))
        out = tmp_path / "o.jsonl"
        options = {"protocol": "openrlhf", "on_error": "skip", "max_retries": 0, "retry_wait": 0.01}
        summary = score_file(server.url, str(data), str(out), options=options, batch_size=1)
        assert (summary["scored"], summary["failed"], summary["written"]) == (2, 1, 2)  # before: "3 scored", a null reward
        assert "2 scored, 1 failed" in capsys.readouterr().err
        assert all(r["reward"] is not None for r in read_jsonl(out))
        failing["on"] = False
        summary = score_file(server.url, str(data), str(out), options=options, batch_size=1, resume=True)
        assert (summary["resumed"], summary["scored"], summary["failed"]) == (2, 1, 0)  # the failed row, scored now
        assert sorted(r["completion"] for r in read_jsonl(out)) == ["a", "c", "flaky"]
    finally:
        server.stop()


# (id, file name, content, the words of the error): each found before any weights load
FIRST_ROW = [
    ("wrong-case", "r.csv", "Prompt,Completion\nQ?,A.\n", "column names are case-sensitive: rename 'Prompt' to 'prompt'"),
    ("best-of-n-on-preference", "r.jsonl", json.dumps({"prompt": "Q?", "chosen": "A.", "rejected": "B."}) + "\n",
     "compare one response per row"),
    ("reward-column", "r.jsonl", json.dumps({"prompt": "Q?", "completion": "A.", "reward": 0.5}) + "\n",
     "has a column 'reward', which rewardbridge score writes and would replace"),
    ("not-utf8", "r.jsonl", None, r"r.jsonl line 1: is not UTF-8 text \(byte 0xe9 at column 16\)"),
]


@pytest.mark.parametrize("name, content, words", [r[1:] for r in FIRST_ROW], ids=[r[0] for r in FIRST_ROW])
def test_the_first_row_is_read_before_any_weights_load(name, content, words, classifier_dir, tmp_path, no_weights):
    path = tmp_path / name
    if content is None:
        path.write_bytes(b'{"prompt": "Caf\xe9", "completion": "x"}\n')  # cp1252
    else:
        path.write_text(content)
    flags = {"best_of_n": 1} if "preference" in words or "one response" in words else {}
    with pytest.raises((ConfigError, InputError), match=words):
        score_file(classifier_dir, str(path), str(tmp_path / "o.jsonl"), **flags)
