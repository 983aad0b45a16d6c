"""Every registered public layer through every check of the shared harness."""

import pytest

from tests.harness import CHECKS
from tests.registry import REGISTRY


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("case", REGISTRY, ids=str)
def test_layer_conformance(case, check):
    CHECKS[check](case)
