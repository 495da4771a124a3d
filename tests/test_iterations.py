"""The dpo/rpo recipe runner: iterations chain policy and reference, --resume starts at the first
unfinished iteration, an engine is restarted per iteration, W&B gets one run per iteration,
recipe mistakes are caught before anything loads, and the shipped recipes train with tiny models."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

import rewardbridge.training.iterations as iterations
from rewardbridge.cli import main as cli_main
from rewardbridge.errors import ConfigError
from rewardbridge.testing import llama_config, save_model
from rewardbridge.training.recipe import load_recipe, parse_recipe
from servers.faulty import free_port

REPO = Path(__file__).parent.parent
GENERATION_SERVER = Path(__file__).parent / "servers" / "generation.py"
QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "Tell me a joke.",
             "Write a haiku about the sea.", "Explain gradient descent.", "What is 12 times 12?"]


def write_recipe(tmp_path, causal_dir, reward_dir, **changes) -> Path:
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}]}) + "\n" for q in QUESTIONS))
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps({"prompt": q}) + "\n" for q in ["Sky?", "Sea?"]))
    recipe = {
        "trainer": "rpo", "seed": 0, "iterations": 2, "model": {"path": causal_dir}, "dataset": {"path": "prompts.jsonl"},
        "pairs": {"reward": {"source": reward_dir, "name": "rm"}, "n": 3, "max_new_tokens": 5, "batch_size": 3,
                  "prompts_per_iteration": 3},
        "evaluation": {"prompts": "heldout.jsonl", "max_new_tokens": 4},
        "training": {"output_dir": str(tmp_path / "out"), "use_cpu": True, "bf16": False, "max_steps": 2,
                     "per_device_train_batch_size": 2, "logging_steps": 1, "report_to": "none", "save_strategy": "no",
                     "gradient_checkpointing": False, "learning_rate": 1e-3, "beta": 0.5, "sft_weight": 0.01},
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key].update(value)
        else:
            recipe[key] = value
    if recipe["trainer"] == "dpo":  # RPOConfig's own fields are not DPOConfig's
        recipe["training"].pop("sft_weight", None)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def built(monkeypatch):
    """Every trainer the runner builds, with copies of its policy's and reference's weights at build time."""
    seen = []
    original = iterations.build_preference_trainer

    def capture(recipe, model, tokenizer, dataset, output_dir, **kwargs):
        trainer = original(recipe, model, tokenizer, dataset, output_dir, **kwargs)
        seen.append({"output_dir": Path(output_dir), "pairs": len(dataset),
                     "policy": {n: p.detach().clone() for n, p in trainer.model.named_parameters()},
                     "reference": {n: p.detach().clone() for n, p in trainer.ref_model.named_parameters()}})
        return trainer

    monkeypatch.setattr(iterations, "build_preference_trainer", capture)
    return seen


def weights(folder) -> dict:
    from transformers import AutoModelForCausalLM

    return {n: p.detach() for n, p in AutoModelForCausalLM.from_pretrained(str(folder)).named_parameters()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_each_iteration_trains_from_and_against_the_previous_policy_and_resumes_at_the_next(
        causal_dir, classifier_dir, built, tmp_path, capsys):
    path = write_recipe(tmp_path, causal_dir, classifier_dir)
    out = tmp_path / "out"
    # Run 1 stops after iteration 1; run 2 (--resume, 2 iterations) must start at iteration 2.
    assert cli_main(["train", str(path), "--set", "iterations=1"]) == 0
    assert cli_main(["train", str(path)]) == 2 and "already holds iterations (iter-1 finished); pass --resume" in capsys.readouterr().err
    iter1_files = {p: p.stat().st_mtime_ns for p in (out / "iter-1").rglob("*") if p.is_file()}
    assert cli_main(["train", str(path), "--resume"]) == 0
    assert [b["output_dir"].parent.name for b in built] == ["iter-1", "iter-2"]  # iteration 1 was not trained again
    assert {p: p.stat().st_mtime_ns for p in (out / "iter-1").rglob("*") if p.is_file()} == iter1_files

    start, iter1 = weights(causal_dir), weights(out / "iter-1" / "policy")
    # Iteration 1: the recipe's policy is both the start and the reference; iteration 2: iteration 1's result.
    assert same(built[0]["policy"], start) and same(built[0]["reference"], start)
    assert same(built[1]["policy"], iter1) and same(built[1]["reference"], iter1)
    assert not same(iter1, start) and not same(weights(out / "iter-2" / "policy"), iter1)  # each iteration trained
    records = json.loads((out / "iterations.json").read_text())
    assert [(r["iteration"], r["reference"]) for r in records] == [(1, causal_dir), (2, str(out / "iter-1" / "policy"))]
    for k in (1, 2):
        d = out / f"iter-{k}"
        assert (d / "pairs.jsonl").exists() and (d / "pairs.jsonl.responses.jsonl").exists() and (d / "done.json").exists()
        # prompts_per_iteration=3: iteration k samples the k-th 3 prompts
        prompts = [json.loads(line)["prompt"][0]["content"] for line in (d / "prompts.jsonl").read_text().splitlines()]
        assert prompts == QUESTIONS[3 * (k - 1):3 * k]
    heldout = json.loads((out / "heldout.json").read_text())
    assert set(heldout) == {"before", "iter-1", "iter-2"} and len(heldout["before"]) == 2
    assert "held-out reward (greedy, 2 prompts)" in capsys.readouterr().out

    # Killed during iteration 2's training, after its pairs: the resume keeps the pairs and trains iteration 2 again.
    responses = (out / "iter-2" / "pairs.jsonl.responses.jsonl").read_bytes()
    for name in ("done.json", "log_history.json"):
        (out / "iter-2" / name).unlink()
    shutil.rmtree(out / "iter-2" / "policy")
    built.clear()
    assert cli_main(["train", str(path), "--resume"]) == 0
    assert [b["output_dir"].parent.name for b in built] == ["iter-2"] and same(built[0]["reference"], iter1)
    assert (out / "iter-2" / "pairs.jsonl.responses.jsonl").read_bytes() == responses  # not sampled again
    assert (out / "iter-2" / "done.json").exists()


def test_an_engine_is_started_on_each_iterations_policy(causal_dir, classifier_dir, built, tmp_path):
    port = free_port()
    command = f"{sys.executable} {GENERATION_SERVER} --model {{policy}} --port {port}"
    path = write_recipe(tmp_path, causal_dir, classifier_dir, trainer="dpo", evaluation=None,
                        pairs={"engine": f"http://127.0.0.1:{port}", "engine_command": command, "drop_truncated": True})
    iterations.run_preference(load_recipe(path))
    out = tmp_path / "out"
    for k, policy in ((1, causal_dir), (2, str(out / "iter-1" / "policy"))):
        run = json.loads((out / f"iter-{k}" / "pairs.jsonl.run.json").read_text())
        # The engine served this iteration's checkpoint, under its path (as vLLM names a model).
        assert run["policy"] == policy and run["engine"] == f"http://127.0.0.1:{port}" and run["drop_truncated"] is True
        for record in map(json.loads, (out / f"iter-{k}" / "pairs.jsonl.responses.jsonl").read_text().splitlines()):
            if record["chosen"] is not None:  # pairs.drop_truncated: no side of a pair was cut at max_new_tokens
                assert {record["responses"][i]["finish_reason"] for i in (record["chosen"], record["rejected"])} == {"stop"}
        assert "serving" in (out / f"iter-{k}" / "engine.log").read_text()
    import socket

    with socket.socket() as s:  # the server was stopped after the pairs: its port is free again
        s.bind(("127.0.0.1", port))


def test_wandb_gets_one_run_per_iteration_in_one_group(causal_dir, classifier_dir, tmp_path, wandb_offline):
    from test_train import read_wandb_records

    path = write_recipe(tmp_path, causal_dir, classifier_dir, evaluation=None, wandb={"project": "rb-test", "name": "tiny-rpo"},
                        training={"report_to": "wandb", "max_steps": 1})
    iterations.run_preference(load_recipe(path))
    runs = []
    for run_file in sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb")):
        records = read_wandb_records(run_file)
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        metrics = [item.key or "/".join(item.nested_key) for r in records if r.WhichOneof("record_type") == "history"
                   for item in r.history.item]
        runs.append((run.display_name, run.run_group, config["iteration"], config["recipe"]["trainer"],
                     "train/rpo/loss" in metrics))
    assert sorted(runs) == [("tiny-rpo-iter-1", "tiny-rpo", 1, "rpo", True), ("tiny-rpo-iter-2", "tiny-rpo", 2, "rpo", True)]


def test_one_training_on_a_pairs_file(causal_dir, classifier_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": "Yes."}],
                                         "rejected": [{"role": "assistant", "content": "No idea, sorry."}],
                                         "chosen_reward": 1.0, "rejected_reward": -0.5 + i}) + "\n" for i, q in enumerate(QUESTIONS[:4])))
    for trainer in ("dpo", "rpo"):
        path = write_recipe(tmp_path, causal_dir, classifier_dir, trainer=trainer, iterations=None, pairs=None,
                            dataset={"path": "pairs.jsonl"}, rewards=[{"source": classifier_dir}],
                            training={"output_dir": str(tmp_path / trainer)})
        history = iterations.run_preference(load_recipe(path))
        assert [e["step"] for e in history if "loss" in e] == [1, 2]
        assert ("rpo/loss" in history[0]) == (trainer == "rpo")
        assert (tmp_path / trainer / "model.safetensors").exists() and (tmp_path / trainer / "heldout.json").exists()


@pytest.mark.parametrize("change, message", [
    ({"pairs": None}, r"iterations: 2 needs a pairs: section"),
    ({"trainer": "rloo", "rewards": [{"source": "x"}]}, r"iterations: is for trainer dpo or rpo"),
    ({"iterations": 0}, r"iterations=0 must be at least 1"),
    ({"pairs": {"engine": "http://127.0.0.1:9"}}, r"pairs.engine serves one fixed policy, but iteration 2 of 2"),
    ({"pairs": {"engine": "http://127.0.0.1:9", "engine_command": "vllm serve model"}}, r"engine_command must hold '\{policy\}'"),
    ({"pairs": {"n": 1}}, r"pairs.n=1: a pair needs at least 2 responses per prompt; set pairs.n to 2"),
    ({"pairs": {"temperature": 0}}, r"pairs.temperature=0.0: greedy decoding gives 3 identical responses"),
    ({"pairs": {"reward": {"function": "rewardbridge.rules:WordLimit"}}}, r"pairs.reward needs a reward model"),
    ({"pairs": {"reward": {"source": "x", "normalize": "zscor"}}}, r"pairs.reward \(x\): normalize='zscor' is not one of"),
    ({"pairs": {"n_samples": 4}}, r"pairs: unknown key 'n_samples'"),
    ({"training": {"loss_type": ["ipo"]}}, r"loss_type=\['ipo'\] is a DPO loss option"),
    ({"training": {"eta": "big"}}, r"training.eta='big' should be float"),
    ({"iterations": None, "pairs": None, "dataset": {"path": "prompts.jsonl"}}, r"row 1 has no chosen, rejected, chosen_reward"),
    ({"pairs": {"reward": {"source": "x", "weight": 2.0}}}, r"pairs.reward.weight: the pairs' reward is the only one"),
    ({"training": {"sync_ref_model": True}}, r"training.sync_ref_model: true mixes the policy into the reference"),
    ({"model": {"path": "CLASSIFIER"}}, r"model.path='.*' is a LlamaForSequenceClassification .*not a causal LM"),
    ({"trainer": "rpo", "training": {"loss_type": "ipo"}}, r"loss_type=\['ipo'\] is a DPO loss option"),
])
def test_recipe_mistakes_are_caught_before_anything_loads(change, message, causal_dir, classifier_dir, tmp_path, no_weights):
    path = write_recipe(tmp_path, causal_dir, classifier_dir)
    data = yaml.safe_load(path.read_text())
    if change.get("model", {}).get("path") == "CLASSIFIER":  # a reward model's folder given as the policy
        change = {"model": {"path": classifier_dir}}
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "dataset":
            data[key] = {**data[key], **value}  # pairs.reward, when given, is replaced whole
        elif value is None:
            data.pop(key, None)
        else:
            data[key] = value
    if change.get("trainer") == "rloo":
        data.pop("training")
    with pytest.raises(ConfigError, match=message):
        parse_recipe(data, base_dir=tmp_path)


# ---- the shipped recipes, with tiny stand-ins --------------------------------------------

PREFERENCE_RECIPES = [p for p in sorted((REPO / "recipes").glob("*.yaml")) if yaml.safe_load(p.read_text())["trainer"] in ("dpo", "rpo")]


@pytest.fixture(scope="module")
def nim_stand_in(tmp_path_factory, tokenizer):
    """A tiny 5-output model behind a real `rewardbridge serve`, whose NIM route answers as NIM does."""
    from transformers import LlamaForSequenceClassification

    from servers.process import start_server, stop

    torch.manual_seed(6)
    five = save_model(tmp_path_factory.mktemp("five"), LlamaForSequenceClassification(llama_config(tokenizer, num_labels=5)), tokenizer)
    process, url = start_server(five, "--model-name", "nvidia/nemotron-4-340b-reward", "--option", "attributes=[helpfulness, correctness, coherence, complexity, verbosity]",
                                env={"REWARDBRIDGE_API_KEY": "nim-test-key"})
    yield url
    stop(process)


def test_the_shipped_preference_recipes_are_these():
    assert [p.stem for p in PREFERENCE_RECIPES] == ["nemotron4_dpo", "nemotron4_rpo", "quickstart_rpo"]


@pytest.mark.parametrize("path", PREFERENCE_RECIPES, ids=[p.stem for p in PREFERENCE_RECIPES])
def test_every_preference_recipe_runs_an_iteration_with_tiny_models(path, causal_dir, judge_dir, request, monkeypatch, tmp_path):
    data = yaml.safe_load(path.read_text())
    assert data["pairs"]["n"] >= 2 and data["iterations"] in (1, 3)
    data["model"] = {"path": causal_dir, "dtype": "float32"}
    reward = data["pairs"]["reward"]
    if reward["source"].startswith("http"):  # NIM: the same options against a local NIM-speaking server
        reward.update(source=request.getfixturevalue("nim_stand_in"), timeout=60)
        monkeypatch.setenv("NVIDIA_API_KEY", "nim-test-key")
    else:  # the demo's judge: a tiny causal LM with " Yes"/" No" tokens
        data["pairs"]["reward"] = {k: v for k, v in reward.items() if k not in ("gguf_file", "source")} | {"source": judge_dir}
    if data["pairs"].get("engine_command"):  # vLLM: a stand-in speaking its API, started the same way
        port = free_port()
        data["pairs"].update(engine=f"http://127.0.0.1:{port}", engine_command=f"{sys.executable} {GENERATION_SERVER} --model {{policy}} --port {port}")
    if data["dataset"].get("format") == "helpsteer2_preference":
        data["dataset"] = {"path": str(REPO / "tests" / "data" / "helpsteer2_preference_sample.jsonl"), "format": "helpsteer2_preference"}
    else:
        data["dataset"]["path"] = str((path.parent / data["dataset"]["path"]).resolve())
    if "evaluation" in data:
        data["evaluation"] = {"prompts": str((path.parent / data["evaluation"]["prompts"]).resolve()), "max_new_tokens": 4, "limit": 2}
    data["iterations"] = 1
    data["pairs"].update(max_new_tokens=4, prompts_per_iteration=None, min_margin=0.0, batch_size=8)
    data["training"].update(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, max_steps=1, gradient_checkpointing=False,
                            per_device_train_batch_size=2, gradient_accumulation_steps=1, report_to="none", save_strategy="no",
                            max_length=128)
    history = iterations.run_preference(parse_recipe(data, base_dir=path.parent, name=path.name))
    steps = [e for e in history if "loss" in e]
    assert len(steps) == 1 and steps[0]["iteration"] == 1
    assert ("rpo/loss" in steps[0]) == (data["trainer"] == "rpo")
    assert (tmp_path / "out" / "iter-1" / "policy" / "config.json").exists()


@pytest.mark.multiprocess
def test_two_processes_share_the_main_process_pairs(causal_dir, classifier_dir, tmp_path):
    from conftest import torchrun

    path = write_recipe(tmp_path, causal_dir, classifier_dir, evaluation=None, training={"per_device_train_batch_size": 1})
    torchrun("preference_iterations.py", str(path), str(tmp_path), timeout=600)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    out = tmp_path / "out"
    # Both ranks trained each iteration on the pairs rank 0 wrote, from the same starting policy, as one job.
    assert [[s["iteration"] for s in r] for r in ranks] == [["iter-1", "iter-2"]] * 2
    assert ranks[0] == ranks[1] and all(s["world"] == 2 for s in ranks[0])
    assert ranks[0][1]["start"] == str(out / "iter-1" / "policy")
    for k, seen in ((1, ranks[0][0]), (2, ranks[0][1])):
        pairs = [json.loads(line) for line in (out / f"iter-{k}" / "pairs.jsonl").read_text().splitlines()]
        assert seen["pairs"] == sorted(p["chosen_reward"] for p in pairs)
    assert json.loads((out / "iterations.json").read_text())[1]["reference"] == str(out / "iter-1" / "policy")


def test_dpo_takes_loss_type_as_a_string_as_dpoconfig_does(causal_dir, classifier_dir, tmp_path, no_weights):
    path = write_recipe(tmp_path, causal_dir, classifier_dir, trainer="dpo", training={"loss_type": "ipo"})
    assert load_recipe(path).training["loss_type"] == ["ipo"]  # DPOConfig.__post_init__ makes the same list


# ---- resume: what it may change, what it refuses, and runs that stopped early ------------------


def test_a_resume_refuses_a_recipe_that_changes_finished_work_and_takes_more_iterations(
        causal_dir, classifier_dir, judge_dir, built, tmp_path, capsys):
    path = write_recipe(tmp_path, causal_dir, classifier_dir, iterations=1)
    out = tmp_path / "out"
    assert cli_main(["train", str(path)]) == 0
    saved = json.loads((out / "recipe.json").read_text())
    assert saved["pairs.prompts_per_iteration"] == 3 and saved["model.path"] == causal_dir and saved["pairs.reward.name"] == "rm"
    before = json.loads((out / "heldout.json").read_text())["before"]
    (tmp_path / "dpo").mkdir()  # the same recipe as trainer: dpo (whose training takes no sft_weight)
    dpo = write_recipe(tmp_path / "dpo", causal_dir, classifier_dir, iterations=1, trainer="dpo", dataset={"path": str(tmp_path / "prompts.jsonl")},
                       evaluation={"prompts": str(tmp_path / "heldout.jsonl")}, training={"output_dir": str(out)})
    refused = [
        ([str(path), "--set", "pairs.prompts_per_iteration=2"], "pairs.prompts_per_iteration: 3 then, 2 now"),
        ([str(dpo)], "trainer: 'rpo' then, 'dpo' now"),
        ([str(path), "--set", f"model.path={judge_dir}"], f"model.path: {causal_dir!r} then, {judge_dir!r} now"),
        ([str(path), "--set", "seed=1"], "seed: 0 then, 1 now"),
        ([str(path), "--set", "training.learning_rate=0.1"], "training.learning_rate: 0.001 then, 0.1 now"),
    ]
    for args, named in refused:
        assert cli_main(["train", *args, "--resume"]) == 2
        err = capsys.readouterr().err
        assert "--resume: " in err and "was run with another recipe" in err and named in err, (args, err)
    assert [b["output_dir"].parent.name for b in built] == ["iter-1"]  # nothing trained by the refused runs
    # Allowed: more iterations, logging, how the reward batches its work. And a heldout.json that lost its "before"
    # gets it from the recipe's policy (greedy: the same numbers), not from iteration 1's result.
    log = json.loads((out / "heldout.json").read_text())
    (out / "heldout.json").write_text(json.dumps({k: v for k, v in log.items() if k != "before"}))
    assert cli_main(["train", str(path), "--resume", "--set", "iterations=2", "--set", "training.logging_steps=2",
                     "--set", "pairs.reward.max_tokens_per_batch=2048"]) == 0
    assert [b["output_dir"].parent.name for b in built] == ["iter-1", "iter-2"]
    assert json.loads((out / "heldout.json").read_text())["before"] == before
    assert json.loads((out / "recipe.json").read_text())["iterations"] == 2


def test_an_iteration_without_pairs_resumes_with_a_lower_margin_from_its_responses(causal_dir, classifier_dir, tmp_path, capsys):
    path = write_recipe(tmp_path, causal_dir, classifier_dir, iterations=1, evaluation=None, pairs={"min_margin": 1e9})
    out = tmp_path / "out"
    # An earlier run killed before its first row: its empty files do not block this one.
    (out / "iter-1").mkdir(parents=True)
    for name in ("pairs.jsonl", "pairs.jsonl.responses.jsonl"):
        (out / "iter-1" / name).write_text("")
    (out / "iter-1" / "pairs.jsonl.run.json").write_text(json.dumps({"command": "pairs", "n": 99}))
    assert cli_main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "iteration 1 made no pairs from 3 prompts (3 below min_margin=1000000000.0" in err
    assert "rerun with --resume --set pairs.min_margin=<lower>" in err
    responses = out / "iter-1" / "pairs.jsonl.responses.jsonl"
    texts = [[r["text"] for r in json.loads(line)["responses"]] for line in responses.read_text().splitlines()]
    assert cli_main(["train", str(path)]) == 2  # a fresh rerun would throw the samples away
    assert "already holds iterations (iter-1 sampled); pass --resume" in capsys.readouterr().err
    assert cli_main(["train", str(path), "--resume", "--set", "pairs.min_margin=0"]) == 0
    assert [[r["text"] for r in json.loads(line)["responses"]] for line in responses.read_text().splitlines()] == texts
    done = json.loads((out / "iter-1" / "done.json").read_text())
    assert done["pairs"]["reselected"] == done["pairs"]["written"] > 0  # every pair chosen again from the kept responses


def test_one_training_refuses_to_overwrite_and_to_resume_without_a_checkpoint(causal_dir, classifier_dir, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": q, "chosen": " Yes.", "rejected": " No.", "chosen_reward": 1.0,
                                         "rejected_reward": 0.0}) + "\n" for q in QUESTIONS[:2]))
    path = write_recipe(tmp_path, causal_dir, classifier_dir, iterations=None, pairs=None, evaluation=None, dataset={"path": "pairs.jsonl"},
                        training={"output_dir": str(tmp_path / "once"), "max_steps": 1})
    assert cli_main(["train", str(path), "--resume"]) == 2
    assert "has no checkpoint-* to resume from" in capsys.readouterr().err
    assert cli_main(["train", str(path)]) == 0
    assert cli_main(["train", str(path)]) == 2
    assert "already holds a RPO training (config.json" in capsys.readouterr().err


def test_other_ranks_wait_for_the_main_process_s_recipe_json_in_a_shared_folder(tmp_path, monkeypatch):
    # On several nodes every rank reads the pairs and policies the main process writes into output_dir:
    # a node-local folder must fail with the reason, not wait in silence for pairs that never come.
    import os
    import time

    from rewardbridge.training.resume import wait_for_main_folder

    monkeypatch.setenv("RANK", "1")
    started = time.time()
    with pytest.raises(ConfigError, match="rank 1 on .* waited 1 s .*recipe.json: training.output_dir must be a folder every node shares"):
        wait_for_main_folder(tmp_path, started, timeout=1.0)
    (tmp_path / "recipe.json").write_text("{}")
    os.utime(tmp_path / "recipe.json", (started - 3600, started - 3600))  # an earlier run's, on this node's own disk
    with pytest.raises(ConfigError, match="must be a folder every node shares"):
        wait_for_main_folder(tmp_path, started, timeout=1.0)
    (tmp_path / "recipe.json").write_text("{}")  # this run's main process wrote it
    assert wait_for_main_folder(tmp_path, started, timeout=1.0) == ["(checked by the main process)"]
