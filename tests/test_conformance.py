"""Every registered public layer through every check of the shared harness.

The fast tier runs the cheap checks on every case and the expensive ones (`EXPENSIVE`:
a SavedModel export and reload, a MirroredStrategy step) once per layer class, on its
richest case (`richest_cases`); the slow tier (`--run-slow`) runs every case through
every check.
"""

import pytest

from tests.harness import CHECKS, richest_cases
from tests.registry import REGISTRY

# The checks that cost seconds per case (an export and reload, a distributed step).
EXPENSIVE = ("saved_model", "distributed")


def _params():
    richest = {check: richest_cases(REGISTRY, check) for check in EXPENSIVE}
    for case in REGISTRY:
        for check in CHECKS:
            once_per_class = check in EXPENSIVE and richest[check][case.layer_cls] is not case
            marks = [pytest.mark.slow] if once_per_class else []
            yield pytest.param(case, check, id=f"{case}-{check}", marks=marks)


@pytest.mark.parametrize(("case", "check"), list(_params()))
def test_layer_conformance(case, check):
    if check in case.not_applicable:
        pytest.skip(f"{check} does not apply: {case.not_applicable[check]}")
    CHECKS[check](case)


def test_every_class_has_its_expensive_checks_in_the_fast_tier():
    classes = {case.layer_cls for case in REGISTRY}
    fast = [p for p in _params() if not p.marks]
    for check in EXPENSIVE:
        covered = {case.layer_cls for case, c in (p.values for p in fast) if c == check}
        assert covered == classes, sorted(c.__name__ for c in classes - covered)
        # The chosen case is one the check applies to, where the class has one.
        for case, c in (p.values for p in fast):
            applicable = [
                k for k in REGISTRY if k.layer_cls is case.layer_cls and c not in k.not_applicable
            ]
            if c == check and applicable:
                assert check not in case.not_applicable, case
