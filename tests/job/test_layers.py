"""The main job's layers against numpy references.

The shared harness runs them through tests/test_conformance.py (cases in tests/job/cases.py).
"""

import numpy as np
import pytest

from mmrep.job.encoders import PaddingMask
from mmrep.job.graph_layers import BatchConstant, PresentMean, SelectColumns


def test_present_mean_matches_numpy_and_ignores_absent_values():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 5, 3))
    presence = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [1, 1]], "float32")
    b_junk = b.copy()
    b_junk[1] = np.nan  # absent in row 1
    out = np.asarray(
        PresentMean(["a", "b"])(
            {"a": a.astype("float32"), "b": b_junk.astype("float32")}, presence=presence
        )
    )
    expected = np.stack([(a[0] + b[0]) / 2, a[1], b[2], np.zeros(3), (a[4] + b[4]) / 2])
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_select_columns_and_batch_constant():
    x = np.arange(12, dtype="float32").reshape(3, 4)
    np.testing.assert_array_equal(SelectColumns([3, 1])(x), x[:, [3, 1]])
    constant = np.asarray(BatchConstant([0.0, 2.5])(np.zeros((3, 9, 2), "uint8")))
    np.testing.assert_array_equal(constant, np.tile([[0.0, 2.5]], (3, 1)))
    ids = np.array([[4, 7, 0], [0, 0, 0]], "int64")
    np.testing.assert_array_equal(PaddingMask()(ids), ids != 0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="columns"):
        SelectColumns([])
    with pytest.raises(ValueError, match=r"columns \[5\] do not exist"):
        SelectColumns([5])(np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match="value"):
        BatchConstant([])
    with pytest.raises(ValueError, match="keys"):
        PresentMean(["a", "b"])({"a": np.zeros((2, 3), "float32")}, presence=np.ones((2, 2)))
    with pytest.raises(ValueError, match="one column per modality"):
        PresentMean(["a", "b"])(
            {"a": np.zeros((2, 3), "float32"), "b": np.zeros((2, 3), "float32")},
            presence=np.ones((2, 3), "float32"),
        )
    with pytest.raises(TypeError, match="integer token ids"):
        PaddingMask()(np.zeros((2, 3), "float32"))
