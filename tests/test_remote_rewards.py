"""What the recipe runner settles about remote rewards (training/remote_rewards.py): a pairwise
judge gets TRL's num_generations as group_size, and a multi-process run is refused when one
hung request could outlast torch.distributed's collective timeout (ddp_timeout)."""

from pathlib import Path

import pytest

from rewardbridge.errors import ConfigError
from rewardbridge.options import RewardOptions
from rewardbridge.scorers.remote import worst_case_seconds
from rewardbridge.training.recipe import load_recipe, parse_recipe
from rewardbridge.training.remote_rewards import check_collective_timeout

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))
GENRM_RECIPE = next(p for p in RECIPES if p.stem == "nemotron3_genrm_grpo")


def judge_recipe(tmp_path, reward: dict, training: dict | None = None, trainer: str = "grpo"):
    (tmp_path / "p.jsonl").write_text('{"prompt": "Q"}\n')
    data = {"trainer": trainer, "model": {"path": "org/policy"}, "dataset": {"path": "p.jsonl"},
            "rewards": [{"source": "http://judge:8000", "protocol": "genrm", **reward}], "training": training or {}}
    return parse_recipe(data, base_dir=tmp_path)


@pytest.mark.parametrize(
    "options, seconds",
    [
        # By count: (max_retries + 1) x timeout + max_retries x 300 (the most a Retry-After can ask), x (parse_retries + 1).
        (dict(protocol="genrm", timeout=600, max_retries=2, retry_budget=1800, parse_retries=1), 2 * (3 * 600 + 2 * 300)),
        (dict(protocol="genrm", timeout=900, max_retries=4, retry_budget=9000, parse_retries=3), 4 * (5 * 900 + 4 * 300)),
        (dict(protocol="principle", principle="c", timeout=60, max_retries=0, parse_retries=2), 3 * 60),
        (dict(protocol="nim", timeout=120, max_retries=4, retry_budget=3600), 5 * 120 + 4 * 300),  # no parse retries outside the judges
        # By the budget: the last attempt starts within retry_budget and lasts at most timeout.
        (dict(protocol="nim", timeout=60), 120 + 60),  # the defaults: max_retries None, retry_budget 120 s
        (dict(protocol="genrm", timeout=600, max_retries=2, parse_retries=1), 2 * (120 + 600)),
    ],
)
def test_worst_case_seconds(options, seconds):
    assert worst_case_seconds(RewardOptions(**options)) == seconds


def test_the_genrm_recipe_s_worst_request_fits_its_ddp_timeout():
    recipe = load_recipe(GENRM_RECIPE)
    (judge,) = [spec for spec in recipe.rewards if spec.options.get("protocol") == "genrm"]
    worst = worst_case_seconds(RewardOptions.from_kwargs(**judge.options))
    assert worst == 4800 < recipe.training["ddp_timeout"] == 7200  # the numbers its header and docs/genrm.md give
    assert judge.options["group_size"] == recipe.training["num_generations"] == 16  # the runner gave TRL's groups


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_fits_a_multi_process_run(path):
    check_collective_timeout(load_recipe(path), world_size=8)


def test_a_multi_process_run_that_a_hung_judge_would_kill_is_refused(tmp_path, monkeypatch):
    recipe = judge_recipe(tmp_path, {"timeout": 900, "max_retries": 4, "retry_budget": 9000})  # 4 x (5 x 900 + 1200) = 22800 s > 1800
    check_collective_timeout(recipe, world_size=1)  # one process: no collective to time out
    message = r"up to 22800 s .* longer than training.ddp_timeout=1800 s, so with 2 processes .* raise training.ddp_timeout to 23400"
    with pytest.raises(ConfigError, match=message):
        check_collective_timeout(recipe, world_size=2)
    check_collective_timeout(judge_recipe(tmp_path, {"timeout": 900, "max_retries": 4, "retry_budget": 9000}, {"ddp_timeout": 23400}), world_size=2)
    from rewardbridge.training.train import build_trainer

    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it: refused before the rewards or the policy load
    with pytest.raises(ConfigError, match="longer than training.ddp_timeout"):
        build_trainer(recipe)


@pytest.mark.parametrize(
    "trainer, training, reward, group_size",
    [("grpo", {"num_generations": 4}, {}, 4), ("grpo", {}, {}, 8), ("rloo", {}, {}, 2),  # TRL's defaults: GRPO 8, RLOO 2
     ("grpo", {"num_generations": 4}, {"group_size": 4}, 4)],
)
def test_the_runner_gives_a_pairwise_judge_trl_s_groups(tmp_path, trainer, training, reward, group_size):
    assert judge_recipe(tmp_path, reward, training, trainer).rewards[0].options["group_size"] == group_size


def test_a_group_size_other_than_num_generations_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"rewards\[0\].group_size=3, but training.num_generations=4"):
        judge_recipe(tmp_path, {"group_size": 3}, {"num_generations": 4})
