"""Other trainers' calling conventions, each in its own module (none imported here).

- ``trl_ppo``: TRL 1.12 ``PPOTrainer``'s ``reward_model`` (an ``nn.Module`` read at the last token).
- ``openrlhf``: OpenRLHF's reward-function file, ``reward_func(queries, prompts, labels)``.
- ``verl``: verl's ``custom_reward_function``, ``async compute_score(...)``, one sample per call.
- ``policy_text``: the policy's rendered prompt turned back into messages (shared by all three).
"""
