"""Offline jobs over dataset files: ``rewardbridge score`` (score.py) and ``rewardbridge eval``
(evaluate.py), reading rows with rows.py and telling row formats apart with formats.py."""
