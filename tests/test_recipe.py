"""Recipes: every shipped recipe loads; every recipe mistake is a clear ConfigError raised
before any weights load (a table of bad recipes)."""

import json
import re
from pathlib import Path

import pytest
import yaml

from rewardbridge.cli import main as cli_main
from rewardbridge.errors import ConfigError
from rewardbridge.training.recipe import Recipe, load_recipe, resolve_path
from rewardbridge.training.train import run

REPO_RECIPES = Path(__file__).parent.parent / "recipes"
RECIPES = sorted(REPO_RECIPES.glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_loads_and_opens_with_its_header(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    header = path.read_text().split("\ntrainer:")[0]
    for line in ("Reproduces:", "Hardware:", "Tested on:", "Expected time:", "Launch:"):
        assert f"# {line}" in header, f"{path.name} header lacks {line!r}"
    launch = header.split("# Launch:")[1]
    assert path.name in launch, "the launch command names this recipe"
    if recipe.dataset.path.endswith(".jsonl"):
        assert Path(recipe.dataset.path).exists(), "a local dataset path resolves against the recipe folder"


def test_overrides_reach_sections_list_items_and_coerce_yaml_text_numbers(tmp_path):
    recipe = load_recipe(REPO_RECIPES / "quickstart.yaml", ["training.max_steps=3", "rewards.0.normalize=zscore", "rewards.0.weight=2",
                                       "training.learning_rate=3e-5", "peft.r=4"])
    assert recipe.training["max_steps"] == 3
    assert recipe.rewards[0].options["normalize"] == "zscore" and recipe.rewards[0].weight == 2.0
    # YAML 1.1 reads "3e-5" (no dot) as text; a float field takes it as the number it spells.
    assert recipe.training["learning_rate"] == 3e-5 and isinstance(recipe.training["learning_rate"], float)
    assert recipe.peft["r"] == 4 and recipe.peft["task_type"] == "CAUSAL_LM"


def test_one_reward_shorthand_and_pkg_paths():
    assert Path(resolve_path("pkg:rewardbridge"), "reward_fn.py").exists()
    with pytest.raises(ConfigError, match="not installed"):
        resolve_path("pkg:no_such_package_here")


@pytest.fixture
def good_recipe(tmp_path, causal_dir, classifier_dir):
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "Hi?"}) + "\n")
    (tmp_path / "heldout.jsonl").write_text(json.dumps({"prompt": "Bye?"}) + "\n")
    recipe = {
        "trainer": "rloo",
        "model": {"path": causal_dir},
        "rewards": [{"source": classifier_dir, "name": "rm", "normalize": "zscore"}],
        "dataset": {"path": "prompts.jsonl"},
        "evaluation": {"prompts": "heldout.jsonl"},
        "peft": {"r": 4},
        "wandb": {"project": "p"},
        "training": {"output_dir": str(tmp_path / "out"), "use_cpu": True, "max_steps": 1, "report_to": "none"},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "config.json").write_text("{}")  # a model folder where the prompts should be
    return path


# (overrides, error type, words the message must contain); "{dir}" is the recipe's folder.
BAD_RECIPES = [
    (["training.max_step=5"], ConfigError, ["training: unknown key 'max_step'", "RLOOConfig", "'max_steps'"]),
    (["training.max_steps=abc"], ConfigError, ["training.max_steps='abc'", "should be int"]),
    (["training.learning_rate=fast"], ConfigError, ["training.learning_rate='fast'", "float"]),
    (["training.report_to=7"], ConfigError, ["training.report_to=7", "str"]),
    (["training.reward_weights=[1.0]"], ConfigError, ["reward_weights", "'weight'"]),
    (["trianing.max_steps=1"], ConfigError, ["unknown recipe key 'trianing'", "'training'"]),
    (["trainer=ppo"], ConfigError, ["trainer='ppo'", "rloo", "grpo"]),
    (["seed=abc"], ConfigError, ["seed='abc'", "int"]),
    (["dataset.path=missing.jsonl"], ConfigError, ["dataset.path='missing.jsonl'", "no such file", "{dir}/missing.jsonl"]),
    (["evaluation.prompts=gone.jsonl"], ConfigError, ["evaluation.prompts", "no such file", "{dir}/gone.jsonl"]),
    (["model.path=./no_model_here"], ConfigError, ["model.path", "no such file", "{dir}/no_model_here"]),
    (["model.pth=x"], ConfigError, ["model: unknown key 'pth'", "'path'"]),
    (["dataset.prompt_colum=q"], ConfigError, ["dataset: unknown key 'prompt_colum'", "'prompt_column'"]),
    (["dataset.format=sharegpt"], ConfigError, ["dataset.format='sharegpt'", "helpsteer2_preference"]),
    (["peft.lora_alpah=8"], ConfigError, ["peft: unknown key 'lora_alpah'", "LoraConfig", "'lora_alpha'"]),
    (["peft.r=many"], ConfigError, ["peft.r='many'", "should be int"]),
    (["wandb.projct=x"], ConfigError, ["wandb: unknown key 'projct'", "'project'"]),
    (["wandb.tags=oops"], ConfigError, ["wandb.tags='oops'", "list"]),
    (["rewards.0.normalize=zscor"], ConfigError, ["rewards[0]", "normalize='zscor'", "zscore"]),
    (["rewards.0.nromalize=zscore"], ConfigError, ["rewards[0]", "nromalize"]),
    (["rewards.0.weight=heavy"], ConfigError, ["rewards[0].weight='heavy'", "float"]),
    (['rewards.0={function: "rewardbridge.rules:Nope"}'], ConfigError, ["rewards[0].function", "has no 'Nope'"]),
    (['rewards.0={function: "rewardbridge.rules:WordLimit", source: x}'], ConfigError, ["exactly one of 'source'", "'function'"]),
    (["rewards=[]"], ConfigError, ["rewards must be a non-empty list"]),
    (["training.max_steps"], ConfigError, ["is not KEY=VALUE", "training.max_steps=5"]),
    (["rewards.3.weight=1"], ConfigError, ["'3' is not an index of a list of 1"]),
    (["trainer.x=1"], ConfigError, ["'trainer.x=1'", "trainer is a value, not a section"]),
    # Issue 15 §5: a key one level off, and what TRL, the dataset or the rewards would refuse only after the weights.
    (["max_steps=2"], ConfigError, ["unknown recipe key 'max_steps'", "did you mean training.max_steps?"]),
    (["dataset.max_steps=2"], ConfigError, ["dataset: unknown key 'max_steps'", "did you mean training.max_steps?"]),
    (["training.gguf_file=x.gguf"], ConfigError, ["training: unknown key 'gguf_file'", "model.gguf_file or rewards[0].gguf_file"]),
    (["normalize=zscore"], ConfigError, ["unknown recipe key 'normalize'", "rewards[0].normalize"]),
    (["training.num_generations=3"], ConfigError, ["per_device_train_batch_size=8 x 1 process(es) x steps_per_generation=1 = 8",
                                                   "not a multiple of num_generations=3"]),
    (["training.per_device_train_batch_size=3"], ConfigError, ["= 3 completions", "num_generations=2"]),
    (["training.generation_batch_size=6", "training.num_generations=4"], ConfigError, ["generation_batch_size=6", "num_generations=4"]),
    (["training.num_generations=1"], ConfigError, ["training.num_generations=1", "2 or more"]),
    (["dataset.path=."], ConfigError, ["dataset.path:", "not one datasets' save_to_disk wrote"]),
    (["dataset.path=sub"], ConfigError, ["dataset.path:", "is a model folder (it has config.json)"]),
    (["dataset.prompt_column=question"], ConfigError, ["no 'question' column", "set dataset.prompt_column"]),
    (['rewards=[{function: "rewardbridge.rules:WordLimit", kwargs: {max_words: 3}}, {function: "rewardbridge.rules:WordLimit", kwargs: {max_words: 3}}]'],
     ConfigError, ["rewards[0] and rewards[1] are both named 'word_limit_3'", "merge them"]),
    (["rewards.0.judge_prompt=Q: {prompt} A: {response}"], ConfigError, ["rewards[0]", "judge_prompt asks a causal LM"]),
    (["model.path=sub/config.json"], ConfigError, ["model.path=", "is a file", "pass its folder"]),
    (["model.path=sub"], ConfigError, ["model.path", "has no tokenizer files"]),
    # Issue 15 review 12: TRL's own config checks, and a run of 0 steps, when the recipe is read.
    (["training.generation_batch_size=4", "training.steps_per_generation=2"], ConfigError,
     ["training.generation_batch_size, training.steps_per_generation: TRL's RLOOConfig refuses", "can not be both configured"]),
    (["training.num_iterations=0"], ConfigError, ["training.num_iterations=0: this run would train 0 steps"]),
    (["training.max_steps=0"], ConfigError, ["training.max_steps=0: this run would train 0 steps"]),
    (["training.lr_scheduler_type=nope"], ConfigError, ["training.lr_scheduler_type: TRL's RLOOConfig refuses", "not a valid SchedulerType"]),
]


@pytest.fixture
def no_weights(monkeypatch):
    """Any model or tokenizer load fails the test: validation must come first."""
    import transformers
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the recipe was validated")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(_BaseAutoModelClass, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", classmethod(refuse))


@pytest.mark.parametrize("overrides,error,words", BAD_RECIPES, ids=[row[0][0] for row in BAD_RECIPES])
def test_bad_recipes_fail_early_with_a_clear_message(good_recipe, no_weights, overrides, error, words):
    with pytest.raises(error) as caught:
        run(load_recipe(good_recipe, overrides))
    message = str(caught.value)
    for word in words:
        word = word.replace("{dir}", str(good_recipe.parent.resolve()))
        assert word in message, f"{word!r} not in {message!r}"


def test_a_reward_model_given_as_the_policy_fails_before_any_weights(good_recipe, classifier_dir, no_weights):
    with pytest.raises(ConfigError, match=r"model.path='.*' is a LlamaForSequenceClassification .*not a causal LM"):
        run(load_recipe(good_recipe, [f"model.path={classifier_dir}"]))


def test_a_resume_without_a_checkpoint_fails_before_any_weights(good_recipe, no_weights):
    # TRL's own error would be a bare "ValueError: No valid checkpoint found", after the weights loaded.
    with pytest.raises(ConfigError, match=r"--resume: .*out has no checkpoint-\* to resume from"):
        run(load_recipe(good_recipe), resume=True)

# (id, the prompt file's lines, the words naming the file and line): issue 15 review 11, every row read in the pre-flight
BAD_PROMPTS = [
    ("null-prompt", [{"prompt": "Hi?"}, {"prompt": None}], ["prompts.jsonl:2: no 'prompt' value (null)"]),
    ("missing-prompt", [{"prompt": "Hi?"}, {"question": "x"}], ["prompts.jsonl:2: no 'prompt' value (missing)"]),
    ("empty-messages", [{"prompt": []}], ["prompts.jsonl:1: prompt is an empty list of messages"]),
    ("image-part", [{"prompt": "Hi?"}, {"prompt": "Yo?"}, {"prompt": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}], ["prompts.jsonl:3: prompt message 0", "image"]),
    ("mixed-kinds", [{"prompt": "Hi?"}, {"prompt": [{"role": "user", "content": "Yo?"}]}],
     ["prompts.jsonl:2: its 'prompt' is a list of messages", "prompts.jsonl:1's is a string"]),
]


@pytest.mark.parametrize("rows, words", [r[1:] for r in BAD_PROMPTS], ids=[r[0] for r in BAD_PROMPTS])
def test_every_prompt_is_read_before_any_weights(good_recipe, no_weights, rows, words):
    (good_recipe.parent / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError) as caught:  # before: mid-training, in TRL, or pyarrow's ArrowTypeError
        run(load_recipe(good_recipe))
    for word in words:
        assert word in str(caught.value), str(caught.value)


def test_the_cli_prints_one_line_and_exits_2(good_recipe, no_weights, capsys):
    assert cli_main(["train", str(good_recipe), "--set", "training.max_steps=abc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rewardbridge: error: training.max_steps='abc' should be int, got str"]


@pytest.fixture
def no_model_weights(monkeypatch):
    """Model weights fail to load; tokenizers load (resolving a reward reads its tokenizer)."""
    import transformers
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the recipe was validated")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(_BaseAutoModelClass, "from_pretrained", classmethod(refuse))


def test_two_reward_models_under_one_name_are_refused_before_any_weights(good_recipe, classifier_dir, no_model_weights):
    twin = {"source": classifier_dir, "normalize": "zscore"}  # both named after the folder
    with pytest.raises(ConfigError, match=r"rewards\[0\] and rewards\[1\] are both named .*give each its own 'name:'"):
        run(load_recipe(good_recipe, [f"rewards={json.dumps([twin, twin])}"]))


def test_a_reward_folder_beside_the_recipe_needs_no_dot_slash(good_recipe, classifier_dir):
    import shutil

    shutil.copytree(classifier_dir, good_recipe.parent / "models" / "rm")
    recipe = load_recipe(good_recipe, ["rewards.0.source=models/rm"])  # was a 50 s hub lookup for 'models/rm'
    assert recipe.rewards[0].source == str(good_recipe.parent / "models" / "rm")


def test_a_hub_dataset_that_cannot_be_reached_fails_before_any_weights(good_recipe, no_weights, monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):  # what datasets raises with no hub (after its retries)
        raise ConnectionError("Couldn't reach 'org/prompts' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(ConfigError, match=r"dataset.path='org/prompts' is not a local file, and loading it as a hub dataset failed"):
        run(load_recipe(good_recipe, ["dataset.path=org/prompts"]))


def test_a_recipe_error_comes_before_the_runner_imports(good_recipe):
    import subprocess
    import sys

    # A fresh process: which modules the error left imported says how far the run got.
    code = (
        "import sys; from rewardbridge.cli import main; "
        f"code = main(['train', {str(good_recipe)!r}, '--set', 'training.num_generations=3']); "
        "print(code, [m for m in ('trl.trainer.rloo_trainer', 'trl.trainer.grpo_trainer', 'rewardbridge.training.train') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "not a multiple of num_generations=3" in out.stderr
    assert out.stdout.strip().splitlines()[-1] == "2 []"  # exit status 2; neither the runner nor TRL's trainers imported


def test_reward_option_paths_resolve_like_reward_sources(good_recipe, classifier_dir, tmp_path_factory, monkeypatch):
    import shutil

    folder = good_recipe.parent
    shutil.copytree(classifier_dir, folder / "tok")
    elsewhere = tmp_path_factory.mktemp("cwd")
    (elsewhere / "zero3.json").write_text("{}")
    monkeypatch.chdir(elsewhere)  # not the recipe's folder
    recipe = load_recipe(good_recipe, ["rewards.0.tokenizer=tok", "rewards.0.zero3=zero3.json"])
    # Beside the recipe wins (before: a 52 s hub lookup for 'tok'); the working directory still counts
    # (the shipped nemotron70b recipe names configs/deepspeed/... from the repository root).
    assert recipe.rewards[0].options == {**recipe.rewards[0].options, "tokenizer": str(folder / "tok"), "zero3": "zero3.json"}
    for override, words in [("rewards.0.tokenizer=./no_tok", "rewards[0].tokenizer='./no_tok': no such file or folder"),
                            ("rewards.0.zero3=gone.json", "rewards[0].zero3='gone.json': no such file or folder")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            load_recipe(good_recipe, [override])
