"""RPO: the loss against its formulas (every distance), and RPOTrainer on a tiny model, its
logged loss checked against log-probs computed here without TRL."""

import math

import numpy as np
import pytest
import torch

from rewardbridge.errors import ConfigError, InputError
from rewardbridge.rpo import DISTANCES, RPOConfig, RPOTrainer, rpo_loss
from rewardbridge.testing import build_tokenizer, llama_config, save_model


def naive(implicit, target, distance):
    """The issue's formulas, written the plain way (float64, moderate values only)."""
    p, q = torch.sigmoid(implicit), torch.sigmoid(target)
    if distance == "bwd_kl":
        return q * (q.log() - p.log()) + (1 - q) * ((1 - q).log() - (1 - p).log())
    if distance == "fwd_kl":
        return p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())
    return (implicit - target) ** 2


def random_pairs(batch=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, generator=g, dtype=torch.float64) * 3 for _ in range(6)]


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("beta, eta", [(0.1, 1.0), (1.0, 0.5), (2.5, 3.0)])
def test_loss_matches_the_formulas(distance, beta, eta):
    pc, pl, rc, rl, cr, rr = random_pairs()
    got = rpo_loss(pc, pl, rc, rl, cr, rr, beta=beta, eta=eta, distance=distance)
    # d = (pc - rc) - (pl - rl); t = eta * (cr - rr)
    expected = naive(beta * ((pc - rc) - (pl - rl)), eta * (cr - rr), distance)
    assert got.shape == (16,) and got.dtype == torch.float64
    # The naive 1 - sigmoid(x) loses digits once |x| nears 20 (beta 2.5 x margins of ~10): 1e-6.
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("distance", ["bwd_kl", "fwd_kl"])
def test_kl_distances_are_nonnegative_and_zero_only_at_the_target(distance):
    pc, pl, rc, rl, cr, rr = random_pairs(seed=1)
    assert (rpo_loss(pc, pl, rc, rl, cr, rr, beta=0.7, distance=distance) >= 0).all()


def test_large_margins_stay_finite_with_finite_gradients():
    # beta*d = +-1e4 against t = 0: bwd_kl = log(1/2) + 1e4/2 (KL(1/2 || sigmoid(1e4))), not inf.
    margin = torch.tensor([1e4, -1e4, 1e4, 3.0], requires_grad=True)
    zeros = torch.zeros(4)
    target = torch.tensor([0.0, 0.0, 1e4, -1e4])  # and a reward gap of 1e4 the other way
    for distance in DISTANCES:
        loss = rpo_loss(margin, zeros, zeros, zeros, target, zeros, beta=1.0, distance=distance)
        assert torch.isfinite(loss).all(), (distance, loss)
        (grad,) = torch.autograd.grad(loss.sum(), margin)
        assert torch.isfinite(grad).all(), (distance, grad)
    bwd = rpo_loss(margin, zeros, zeros, zeros, target, zeros, beta=1.0, distance="bwd_kl")
    assert bwd[0].item() == pytest.approx(math.log(0.5) + 5000, rel=1e-6)
    assert bwd[2].item() == pytest.approx(0.0, abs=1e-3)  # implicit = target = 1e4


@pytest.mark.parametrize("distance", DISTANCES)
def test_gradient_is_beta_times_the_analytic_derivative(distance):
    pc, pl, rc, rl, cr, rr = random_pairs(seed=2)
    pc.requires_grad_(True)
    beta, eta = 0.8, 1.5
    rpo_loss(pc, pl, rc, rl, cr, rr, beta=beta, eta=eta, distance=distance).sum().backward()
    x, t = beta * ((pc - rc) - (pl - rl)).detach(), eta * (cr - rr)
    p, q = torch.sigmoid(x), torch.sigmoid(t)
    # d/dx: bwd_kl p - q; fwd_kl p(1-p)(x - t); sq 2(x - t); and dx/d(pc) = beta.
    derivative = {"bwd_kl": p - q, "fwd_kl": p * (1 - p) * (x - t), "sq": 2 * (x - t)}[distance]
    torch.testing.assert_close(pc.grad, beta * derivative, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("distance", DISTANCES)
def test_at_the_target_the_loss_and_its_gradient_vanish(distance):
    # beta*d = t: pc chosen so that 0.5 * (pc - 0) = 2 * (cr - rr).
    cr, rr = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), torch.tensor([0.1, 0.5, -2.0], dtype=torch.float64)
    pc = (2.0 * (cr - rr) / 0.5).clone().requires_grad_(True)
    zeros = torch.zeros(3, dtype=torch.float64)
    loss = rpo_loss(pc, zeros, zeros, zeros, cr, rr, beta=0.5, eta=2.0, distance=distance)
    loss.sum().backward()
    torch.testing.assert_close(loss, zeros, atol=1e-12, rtol=0)
    torch.testing.assert_close(pc.grad, zeros, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"distance": "kl"}, "distance='kl' is not one of"),
    ({"beta": 0.0}, "beta=0.0 must be a finite number > 0"),
    ({"beta": float("nan")}, "beta=nan"),
    ({"beta": 1.0, "eta": -1.0}, "eta=-1.0 must be"),
])
def test_bad_arguments_are_refused(kwargs, message):
    z = torch.zeros(2)
    with pytest.raises(ConfigError, match=message):
        rpo_loss(z, z, z, z, z, z, **{"beta": 0.1, **kwargs})


@pytest.mark.parametrize("beta, eta", [
    (np.float32(0.5), np.float64(2.0)), (torch.tensor(0.5), torch.tensor(2.0, dtype=torch.float64)), (np.float16(0.5), 2),
])
def test_beta_and_eta_take_any_real_number(beta, eta):
    pc, pl, rc, rl, cr, rr = random_pairs(seed=3)
    expected = rpo_loss(pc, pl, rc, rl, cr, rr, beta=0.5, eta=2.0)
    torch.testing.assert_close(rpo_loss(pc, pl, rc, rl, cr, rr, beta=beta, eta=eta), expected)


@pytest.mark.parametrize("beta, message", [
    (True, "beta=True must be a real number > 0"),
    (torch.tensor([0.5]), r"beta=tensor\(\[0.5000\]\) must be a real number > 0 .* got a tensor of shape \(1,\)"),
    ("0.5", "beta='0.5' must be a real number"),
    (np.float32(-1.0), "beta=-1.0 must be a finite number > 0"),
])
def test_beta_that_is_not_one_positive_number_is_refused(beta, message):
    z = torch.zeros(2)
    with pytest.raises(ConfigError, match=message):
        rpo_loss(z, z, z, z, z, z, beta=beta)


def test_tensors_of_other_shapes_are_refused():
    z = torch.zeros(2)
    with pytest.raises(ConfigError, match=r"chosen_rewards must be a tensor of shape \(B,\) like policy_chosen_logps \(2,\), got \(3,\)"):
        rpo_loss(z, z, z, z, torch.zeros(3), z, beta=0.1)


# ---- RPOTrainer ---------------------------------------------------------------------------

PAIRS = [
    ("What is the capital of France?", "Paris.", "The capital of France is Paris, a city.", 1.5, -0.5),
    ("How many legs does a spider have?", "Eight.", "A spider has six legs.", 2.0, -1.0),
    ("Tell me a joke.", "Why did the model cross the road?", "No.", 0.25, 0.0),
    ("Write a haiku about the sea.", "Waves fold into foam.", "The sea.", -0.3, -1.2),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import LlamaForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(10)
    policy = save_model(tmp_path_factory.mktemp("policy"), LlamaForCausalLM(llama_config(tok)), tok)
    torch.manual_seed(11)
    reference = save_model(tmp_path_factory.mktemp("reference"), LlamaForCausalLM(llama_config(tok)), tok)
    return policy, reference


def pairs_dataset(rows=PAIRS, swap=False):
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": c}],
         "rejected": [{"role": "assistant", "content": r}],
         "chosen_reward": rr if swap else cr, "rejected_reward": cr if swap else rr}
        for q, c, r, cr, rr in rows
    ])


def completion_logps(model, tokenizer, prompt, completion, mean=False) -> torch.Tensor:
    """log pi(completion | prompt) summed (or averaged) over the completion's tokens, from plain logits."""
    prefix = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    assert full.startswith(prefix)
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    assert ids[: len(prefix_ids)] == prefix_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logprobs = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    completion_part = logprobs[len(prefix_ids) - 1:]
    return completion_part.mean() if mean else completion_part.sum()


def rpo_args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, max_steps=2, per_device_train_batch_size=4,
                  learning_rate=1e-3, logging_steps=1, report_to="none", save_strategy="no", gradient_checkpointing=False,
                  beta=0.5, eta=1.0, sft_weight=0.1, disable_tqdm=True)
    values.update(overrides)
    return RPOConfig(**values)


@pytest.mark.parametrize("distance, average", [(d, False) for d in DISTANCES] + [("bwd_kl", True)])
def test_trainer_logs_the_loss_computed_from_independent_log_probs(distance, average, models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy_dir, reference_dir = models
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    policy, reference = AutoModelForCausalLM.from_pretrained(policy_dir), AutoModelForCausalLM.from_pretrained(reference_dir)
    # Before training, from plain forwards: the loss the first step must log.
    dataset = pairs_dataset()
    logps = {}
    for name, model in (("policy", policy), ("ref", reference)):
        for column in ("chosen", "rejected"):
            logps[f"{name}_{column}"] = torch.stack([completion_logps(model, tokenizer, row["prompt"], row[column], mean=average)
                                                     for row in dataset])
    rewards = torch.tensor(dataset["chosen_reward"], dtype=torch.float64), torch.tensor(dataset["rejected_reward"], dtype=torch.float64)
    per_pair = rpo_loss(logps["policy_chosen"], logps["policy_rejected"], logps["ref_chosen"], logps["ref_rejected"], *rewards,
                        beta=0.5, eta=1.0, distance=distance)
    sft = -logps["policy_chosen"].mean()
    trainer = RPOTrainer(model=policy, ref_model=reference, args=rpo_args(tmp_path, distance=distance, average_log_probs=average),
                         train_dataset=dataset,
                         processing_class=tokenizer)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    steps = [e for e in trainer.state.log_history if "loss" in e and "rpo/loss" in e]
    assert [e["step"] for e in steps] == [1, 2]
    first = steps[0]
    # loss = mean over pairs of the distance + sft_weight * (-mean chosen log-prob)
    assert first["rpo/loss"] == pytest.approx(per_pair.mean().item(), rel=1e-4, abs=1e-5)
    assert first["rpo/sft_loss"] == pytest.approx(sft.item(), rel=1e-4)
    assert first["loss"] == pytest.approx((per_pair.mean() + 0.1 * sft).item(), rel=1e-4, abs=1e-5)
    implicit = 0.5 * ((logps["policy_chosen"] - logps["ref_chosen"]) - (logps["policy_rejected"] - logps["ref_rejected"]))
    assert first["rpo/implicit_gap"] == pytest.approx(implicit.mean().item(), rel=1e-4, abs=1e-5)
    assert first["rpo/target_gap"] == pytest.approx((rewards[0] - rewards[1]).mean().item(), rel=1e-6)
    target = rewards[0] - rewards[1]
    assert first["rpo/agreement"] == pytest.approx((torch.sign(implicit) == torch.sign(target)).double().mean().item())
    for name in ("rewards/chosen", "rewards/margins", "rewards/accuracies", "logps/chosen", "entropy", "mean_token_accuracy"):
        assert name in first, f"TRL's DPO metric {name} is not logged"
    assert first["logps/chosen"] == pytest.approx(logps["policy_chosen"].mean().item(), rel=1e-4)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters())), "2 steps changed no weight"
    assert all(math.isfinite(e["loss"]) for e in steps)


def test_swapping_the_rewards_changes_the_loss(models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy_dir, reference_dir = models
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    losses = []
    for swap in (False, True):
        trainer = RPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy_dir),
                             ref_model=AutoModelForCausalLM.from_pretrained(reference_dir),
                             args=rpo_args(tmp_path, max_steps=1, sft_weight=0.0), train_dataset=pairs_dataset(swap=swap),
                             processing_class=tokenizer)
        trainer.train()
        losses.append(next(e["loss"] for e in trainer.state.log_history if "loss" in e))
    # Same texts, same models: only the rewards differ, and they reach the loss.
    assert abs(losses[0] - losses[1]) > 1e-3, losses


def test_trainer_refuses_pairs_without_rewards_and_dpo_loss_options(models, tmp_path):
    from datasets import Dataset

    policy_dir, _ = models
    no_rewards = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}])
    with pytest.raises(InputError, match="train_dataset has no chosen_reward or rejected_reward column"):
        RPOTrainer(model=policy_dir, args=rpo_args(tmp_path), train_dataset=no_rewards)
    bad = pairs_dataset(PAIRS[:1] + [("Q", "A", "B", float("nan"), 0.0)])
    with pytest.raises(InputError, match="train_dataset row 1: chosen_reward=nan is not a finite number"):
        RPOTrainer(model=policy_dir, args=rpo_args(tmp_path), train_dataset=bad)
    with pytest.raises(ConfigError, match="loss_type=.*is a DPO loss option"):
        rpo_args(tmp_path, loss_type=["ipo"])
    with pytest.raises(ConfigError, match="distance='l2' is not one of"):
        rpo_args(tmp_path, distance="l2")
    from trl import DPOConfig

    with pytest.raises(ConfigError, match="RPOTrainer needs args=RPOConfig"):
        RPOTrainer(model=policy_dir, args=DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False),
                   train_dataset=pairs_dataset())
