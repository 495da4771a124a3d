"""Every docstring example in the package runs and says what it shows."""

import doctest
import importlib
import pkgutil

import pytest

import rewardbridge

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(rewardbridge.__path__, "rewardbridge."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
