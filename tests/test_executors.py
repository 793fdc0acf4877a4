"""The executor seam: specs, the local executor's order, and the hint when Ray is missing."""

import importlib.util

import pytest

from rerank.errors import ConfigError, MissingDependency
from rerank.executors import Executor, LocalExecutor, executor_from_spec


def _square(x: int) -> int:
    return x * x


def test_local_executor_yields_results_in_item_order_lazily():
    seen = []

    def record(x):
        seen.append(x)
        return _square(x)

    results = LocalExecutor().map(record, [3, 1, 2])
    assert seen == []                                   # nothing runs before the caller asks
    assert next(results) == 9 and seen == [3]
    assert list(results) == [1, 4]


@pytest.mark.parametrize("spec", [None, "local", " local "])
def test_local_specs(spec):
    assert isinstance(executor_from_spec(spec), LocalExecutor)


def test_an_executor_object_is_used_as_is():
    mine = LocalExecutor()
    assert executor_from_spec(mine) is mine and isinstance(mine, Executor)


@pytest.mark.parametrize("spec", ["nope", "local:x", "ray:", "", 3])
def test_bad_specs_are_refused_in_one_line(spec):
    with pytest.raises(ConfigError) as e:
        executor_from_spec(spec)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="Ray is installed here")
def test_ray_without_ray_names_the_extra():
    with pytest.raises(MissingDependency, match=r"rerank\[ray\]"):
        executor_from_spec("ray")
