"""The ``trainer: dpo | rpo`` runner: one training on a preference dataset, or Nemotron-4's
iterations (``iterations: K`` with ``pairs:``).

Iteration k (``output_dir/iter-k/``): ``pairs.jsonl`` (+ its side files) sampled from the
current policy and scored by ``pairs.reward``; ``train/`` (TRL's checkpoints) where DPO or RPO
trains that policy with itself as the reference (TRL reloads the reference from the policy's
folder; with LoRA, the disabled adapter); ``policy/``, the result (LoRA merged), which
iteration k+1 starts from; ``done.json``. ``--resume`` skips finished iterations and resumes
the first unfinished one: its pairs by row identity, its training from its last checkpoint.
The held-out check (``evaluation``) scores greedy answers before iteration 1 and after each.
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

from ..errors import ConfigError
from .engine_process import EngineProcess
from .preference import PAIR_COLUMNS, REWARD_COLUMNS
from .prompts import load_prompts, read_rows
from .recipe import Recipe
from .report import HeldOut, PreferenceStepPrinter
from .resume import check_iterations_folder, check_training_folder, wait_for_main_folder
from .train import build_rewards, quiet_libraries, resolve_model

__all__ = ["PreferenceStepPrinter", "build_preference_trainer", "run_preference"]


def run_preference(recipe: Recipe, resume: bool = False) -> list[dict]:
    """Train a dpo/rpo recipe; returns TRL's log history (every iteration's, each entry with its ``iteration``)."""
    started, started_wall = time.monotonic(), time.time()
    quiet_libraries()
    import torch
    from transformers import set_seed

    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    set_seed(recipe.seed)
    out = Path(recipe.training.get("output_dir") or "trainer_output")
    if recipe.pairs is None:
        return _train_once(recipe, out, resume, started)
    main = int(os.environ.get("RANK", "0")) == 0
    # The main process checks the folder (and saves the recipe); the others wait for that, which also
    # proves the folder is one they share with it.
    work = check_iterations_folder(recipe, out, resume) if main else wait_for_main_folder(out, started_wall)
    out.mkdir(parents=True, exist_ok=True)
    prompts = _write_prompts(recipe, out, main, fresh=not work)
    # The main process samples and scores; the others only train (and wait for its pairs).
    reward = build_rewards([recipe.pairs.reward])[0] if main else None
    heldout = _heldout(recipe, reward)
    log = json.loads((out / "heldout.json").read_text()) if work and (out / "heldout.json").exists() else {}
    start = resolve_model(recipe.model.path, recipe.model.gguf_file)
    policy, records, history = start, [], []
    for k in range(1, recipe.iterations + 1):
        d = out / f"iter-{k}"
        if (d / "done.json").exists():
            record = json.loads((d / "done.json").read_text())
            policy = record["policy"]
            records.append(record)
            history += json.loads((d / "log_history.json").read_text()) if (d / "log_history.json").exists() else []
            if main:
                print(f"iteration {k}/{recipe.iterations}: done in an earlier run ({policy})", flush=True)
            continue
        d.mkdir(parents=True, exist_ok=True)
        if heldout is not None and "before" not in log and k > 1:  # "before" is the recipe's policy, never a later one
            log["before"] = _score_heldout(heldout, *_load_policy(start, recipe))
            (out / "heldout.json").write_text(json.dumps(log, indent=1))
            heldout.trainer.model = None  # let the recipe's policy go before this iteration's loads
            gc.collect()
        model, tokenizer = _load_policy(policy, recipe)
        if heldout is not None and "before" not in log:
            log["before"] = _score_heldout(heldout, model, tokenizer)
            (out / "heldout.json").write_text(json.dumps(log, indent=1))
        stats = _make_iteration_pairs(recipe, k, d, prompts, policy, model, tokenizer, reward, main)
        run = _start_wandb(recipe, k, out) if main and recipe.reports_to_wandb else None
        trainer = build_preference_trainer(recipe, model, tokenizer, _pairs_dataset(d / "pairs.jsonl", recipe.trainer), d / "train",
                                           label=f"iter {k}/{recipe.iterations}", run_name=f"{_run_base(recipe, out)}-iter-{k}")
        checkpoints = list((d / "train").glob("checkpoint-*"))
        if main:
            print(f"iteration {k}/{recipe.iterations}: {recipe.trainer.upper()} on {stats['written']} pairs from {policy}, "
                  f"which is also the reference", flush=True)
        trainer.train(resume_from_checkpoint=True if resume and checkpoints else None)
        steps = [dict(e, iteration=k) for e in trainer.state.log_history]
        history += steps
        _save_policy(trainer, tokenizer, d / "policy", main)
        losses = [e["loss"] for e in steps if "loss" in e]
        record = {"iteration": k, "reference": str(policy), "policy": str(d / "policy"), "pairs": stats,
                  "steps": trainer.state.global_step, "loss_first": losses[0] if losses else None,
                  "loss_last": losses[-1] if losses else None}
        if heldout is not None:
            log[f"iter-{k}"] = _score_heldout(heldout, trainer.model, tokenizer)
            record["heldout_mean"] = _mean(log[f"iter-{k}"])
            (out / "heldout.json").write_text(json.dumps(log, indent=1))
        if main:
            (d / "log_history.json").write_text(json.dumps(steps, indent=1))
            (d / "done.json").write_text(json.dumps(record, indent=1))
        if run is not None:
            run.summary.update({"iteration": k, **{f"pairs/{key}": v for key, v in stats.items() if isinstance(v, (int, float))},
                                **({"heldout/reward": record["heldout_mean"]} if "heldout_mean" in record else {})})
            run.finish()
        trainer.accelerator.wait_for_everyone()
        records.append(record)
        policy = str(d / "policy")
        del trainer, model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if main:
        (out / "iterations.json").write_text(json.dumps(records, indent=1))
        _print_summary(records, log, heldout, time.monotonic() - started, out)
    return history


def build_preference_trainer(recipe: Recipe, model, tokenizer, dataset, output_dir: Path, label: str = "", run_name: str | None = None):
    """TRL's DPOTrainer (``trainer: dpo``) or RPOTrainer (``rpo``) for ``model`` on ``dataset``; the
    reference is TRL's default: a copy of ``model`` reloaded from its folder (LoRA: the base)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import DPOConfig, DPOTrainer

    from .rpo import RPOConfig, RPOTrainer

    config_class, trainer_class = {"dpo": (DPOConfig, DPOTrainer), "rpo": (RPOConfig, RPOTrainer)}[recipe.trainer]
    training = {**recipe.training, "output_dir": str(output_dir)}
    if run_name and "run_name" not in training:
        training["run_name"] = run_name
    peft_config = None
    if recipe.peft is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(**recipe.peft)
    trainer = trainer_class(model=model, args=config_class(seed=recipe.seed, **training), train_dataset=dataset,
                            processing_class=tokenizer, peft_config=peft_config, callbacks=[PreferenceStepPrinter(label)])
    trainer.remove_callback(PrinterCallback)  # PreferenceStepPrinter prints one line per step instead
    trainer.remove_callback(ProgressCallback)
    return trainer


def _train_once(recipe: Recipe, out: Path, resume: bool, started: float) -> list[dict]:
    """No pairs section: DPO/RPO on the recipe's preference dataset, once; the model is saved to ``output_dir``."""
    from datasets import Dataset, load_dataset

    spec = recipe.dataset
    dataset = Dataset.from_list(read_rows(spec.path)) if os.path.isfile(spec.path) else load_dataset(spec.path, data_dir=spec.data_dir, split=spec.split)
    if spec.limit:
        dataset = dataset.select(range(min(spec.limit, len(dataset))))
    if int(os.environ.get("RANK", "0")) == 0:
        check_training_folder(out, resume, f"{recipe.trainer.upper()} training")
    model, tokenizer = _load_policy(resolve_model(recipe.model.path, recipe.model.gguf_file), recipe)
    heldout = _heldout(recipe)
    log = {"before": _score_heldout(heldout, model, tokenizer)} if heldout is not None else {}
    trainer = build_preference_trainer(recipe, model, tokenizer, dataset.remove_columns([c for c in ("row_id", "margin") if c in dataset.column_names]),
                                       out, label=recipe.trainer.upper())
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.save_model(str(out))
    if heldout is not None:
        log["after"] = _score_heldout(heldout, trainer.model, tokenizer)
    if trainer.accelerator.is_main_process:
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        if log:
            (out / "heldout.json").write_text(json.dumps(log, indent=1))
        _print_summary([], log, heldout, time.monotonic() - started, out)
    return trainer.state.log_history


def _write_prompts(recipe: Recipe, out: Path, main: bool, fresh: bool = False) -> Path:
    """The recipe's prompts, once, as ``output_dir/prompts.jsonl`` (the pairs jobs' input and row identity);
    ``fresh``: no iteration holds work yet, so the file is this run's to write again."""
    path = out / "prompts.jsonl"
    rows = [{"prompt": p} for p in load_prompts(recipe.dataset)["prompt"]]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    need = (recipe.pairs.prompts_per_iteration or 0) * recipe.iterations
    if need > len(rows):
        raise ConfigError(f"pairs.prompts_per_iteration={recipe.pairs.prompts_per_iteration} x iterations={recipe.iterations} "
                          f"needs {need} prompts; dataset has {len(rows)}: lower one of them, or give more prompts")
    if not main:
        return path  # the main process writes it (and checks it) before it samples
    if path.exists() and path.read_text() != text and not fresh:
        raise ConfigError(f"{path} holds other prompts than the recipe's dataset now; resume with the same dataset, "
                          "or set training.output_dir to a new folder")
    if not path.exists() or fresh:
        path.with_suffix(".tmp").write_text(text)
        os.replace(path.with_suffix(".tmp"), path)
    return path


def _make_iteration_pairs(recipe, k, d: Path, prompts: Path, policy, model, tokenizer, reward, main: bool) -> dict:
    """``iter-k/pairs.jsonl`` from the current policy (the main process samples; the others wait for it)."""
    from ..jobs.generate import EngineSettings
    from ..jobs.pairs import make_pairs

    done = d / "pairs.done.json"
    if done.exists():
        return json.loads(done.read_text())
    if not main:
        while not done.exists():  # no collective here: the main process may sample for hours
            time.sleep(2)
        return json.loads(done.read_text())
    spec = recipe.pairs
    if spec.prompts_per_iteration:
        m = spec.prompts_per_iteration
        lines = prompts.read_text().splitlines(keepends=True)[(k - 1) * m:k * m]
        (d / "prompts.jsonl").write_text("".join(lines))
        prompts = d / "prompts.jsonl"
    common = dict(reward=reward, n=spec.n, min_margin=spec.min_margin, drop_truncated=spec.drop_truncated,
                  batch_size=spec.batch_size, max_new_tokens=spec.max_new_tokens,
                  temperature=spec.temperature, top_p=spec.top_p, seed=recipe.seed + 1000 * k, as_chat=spec.as_chat,
                  resume=(d / "pairs.jsonl").exists(), progress=False)
    print(f"iteration {k}/{recipe.iterations}: sampling {spec.n} responses per prompt from {policy}"
          + (f" on {spec.engine}" if spec.engine else ""), flush=True)
    started = time.monotonic()
    if spec.engine is not None:
        settings = EngineSettings(timeout=spec.engine_timeout, max_concurrency=spec.engine_concurrency, api_key_env=spec.engine_key_env)
        with EngineProcess(spec, str(policy), d / "engine.log") as served_name:
            stats = make_pairs(served_name or spec.engine_model or recipe.model.path, str(prompts), str(d / "pairs.jsonl"),
                               engine=spec.engine, engine_settings=settings, **common)
    else:
        stats = make_pairs(str(policy), str(prompts), str(d / "pairs.jsonl"), model=model, tokenizer=tokenizer, **common)
    stats = {key: v for key, v in stats.items() if key != "output"} | {"seconds": round(time.monotonic() - started, 1)}
    if stats["written"] == 0:
        truncated = (f", {stats['truncated']} with fewer than 2 complete responses (pairs.drop_truncated: false keeps the cut ones, "
                     "or raise pairs.max_new_tokens)") if spec.drop_truncated else ""
        raise ConfigError(f"iteration {k} made no pairs from {stats['rows']} prompts ({stats['below_margin']} below "
                          f"min_margin={spec.min_margin}, {stats['unscored']} unscored{truncated}). Its responses are kept in "
                          f"{d / 'pairs.jsonl.responses.jsonl'}: rerun with --resume --set pairs.min_margin=<lower> to choose "
                          "their pairs again, or raise pairs.n with a new training.output_dir")
    done.with_suffix(".tmp").write_text(json.dumps(stats, indent=1))
    os.replace(done.with_suffix(".tmp"), done)  # whole or absent: the other processes poll for it
    return stats


def _pairs_dataset(path: Path, trainer: str):
    from datasets import Dataset

    columns = PAIR_COLUMNS + (REWARD_COLUMNS if trainer == "rpo" else ())
    return Dataset.from_list([{c: row[c] for c in columns} for row in read_rows(str(path))])


def _load_policy(path: str, recipe: Recipe):
    """The policy and its tokenizer from a folder; on the GPU this process trains on unless ``use_cpu``."""
    import torch
    from transformers import AutoTokenizer

    from ..policy import load_causal_lm

    dtype = "auto" if recipe.model.dtype == "auto" else getattr(torch, recipe.model.dtype)
    model = load_causal_lm(path, "policy", dtype=dtype, trust_remote_code=recipe.model.trust_remote_code)
    if torch.cuda.is_available() and not recipe.training.get("use_cpu"):
        model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    return model, AutoTokenizer.from_pretrained(path, trust_remote_code=recipe.model.trust_remote_code)


def _save_policy(trainer, tokenizer, folder: Path, main: bool) -> None:
    """The trained policy as a plain folder the next iteration loads (LoRA merged into the weights)."""
    from accelerate.utils import is_peft_model

    if is_peft_model(trainer.model):
        if main:
            trainer.accelerator.unwrap_model(trainer.model).merge_and_unload().save_pretrained(folder)
    else:
        trainer.save_model(str(folder))
    if main:
        tokenizer.save_pretrained(folder)
    trainer.accelerator.wait_for_everyone()


def _heldout(recipe: Recipe, default_reward=None) -> HeldOut | None:
    """train.py's held-out check, scored by the recipe's ``rewards`` (default: the pairs' reward)."""
    if recipe.evaluation is None or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if recipe.evaluation is not None and int(os.environ.get("RANK", "0")) == 0:
            print("held-out check skipped: it runs in single-process runs only", flush=True)
        return None
    funcs = build_rewards(recipe.rewards) if recipe.rewards else [default_reward]
    heldout = HeldOut(SimpleNamespace(reward_funcs=funcs, model=None, processing_class=None), recipe)
    heldout.weights = [r.weight for r in recipe.rewards] if recipe.rewards else [1.0]
    return heldout


def _score_heldout(heldout: HeldOut, model, tokenizer) -> list:
    heldout.trainer.model, heldout.trainer.processing_class = model, tokenizer
    return [list(pair) for pair in heldout.score()]


def _mean(scores: list) -> float:
    return sum(s for _, s in scores) / len(scores)


def _run_base(recipe: Recipe, out: Path) -> str:
    return (recipe.wandb.name if recipe.wandb is not None and recipe.wandb.name else None) or out.name


def _start_wandb(recipe: Recipe, k: int, out: Path):
    """One W&B run per iteration, grouped: ``<name>-iter-<k>``, config = the recipe + ``iteration``."""
    import wandb

    spec, base = recipe.wandb, _run_base(recipe, out)
    kwargs = {} if spec is None else dict(project=spec.project, entity=spec.entity, tags=spec.tags or None, notes=spec.notes)
    kwargs.setdefault("project", os.environ.get("WANDB_PROJECT") or "rewardbridge")
    return wandb.init(name=f"{base}-iter-{k}", group=(spec.group if spec is not None and spec.group else base),
                      config={"recipe": recipe.to_dict(), "iteration": k}, **kwargs)


def _print_summary(records: list[dict], log: dict, heldout: HeldOut | None, seconds: float, out: Path) -> None:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    lines = [f"\ndone: {len(records)} iteration(s) in {seconds:.0f} s ({usage.ru_utime + usage.ru_stime:.0f} s of CPU time)"]
    for r in records:
        p = r["pairs"]
        lines.append(f"  iteration {r['iteration']}: {p['written']} pairs of {p['rows']} prompts ({p['below_margin']} below the "
                     f"margin), {r['steps']} steps, loss {_f(r['loss_first'])} -> {_f(r['loss_last'])}"
                     + (f", held-out {r['heldout_mean']:+.4f}" if "heldout_mean" in r else ""))
    after = log.get(f"iter-{records[-1]['iteration']}") if records else log.get("after")
    if heldout is not None and "before" in log and after:
        heldout.before, heldout.after = [tuple(x) for x in log["before"]], [tuple(x) for x in after]
        heldout.print_table()
        lines.append(f"  held-out reward (greedy, {len(heldout.prompts)} prompts): {_mean(log['before']):+.4f} -> "
                     f"{_mean(after):+.4f} ({_mean(after) - _mean(log['before']):+.4f})")
    lines.append(f"  wrote {out}/" + ("iterations.json, iter-*/" if records else "log_history.json"))
    print("\n".join(lines), flush=True)


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
