"""Every registered public layer through every check of the shared harness."""

import pytest

from tests.harness import CHECKS
from tests.registry import REGISTRY


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("case", REGISTRY, ids=str)
def test_layer_conformance(case, check):
    if check in case.not_applicable:
        pytest.skip(f"{check} does not apply: {case.not_applicable[check]}")
    CHECKS[check](case)
