"""``rewardbridge train``: recipes (recipe.py, the schema), the runner (train.py) and the
prompt datasets they train on (prompts.py)."""
