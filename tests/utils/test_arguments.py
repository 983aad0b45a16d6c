"""`is_int` / `check_int`: the one check of mmrep's integer arguments."""

import json

import numpy as np
import pytest

import mmrep
from mmrep.utils.arguments import check_int, is_int


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3), 0, -5])
def test_is_int_accepts_python_and_numpy_ints(value):
    assert is_int(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 3.0, np.float64(3.0), "3", None])
def test_is_int_refuses_bools_floats_strings_and_none(value):
    assert not is_int(value)


def test_is_int_bounds_are_inclusive():
    assert is_int(1, 1) and is_int(np.int64(1), minimum=1)
    assert not is_int(0, 1)
    assert is_int(5, 1, 5) and not is_int(6, 1, 5)
    assert is_int(-3, maximum=-3) and not is_int(-2, maximum=-3)
    assert not is_int(True, 0, 1)


def test_check_int_returns_a_python_int():
    value = check_int("units", np.int32(7), minimum=1)
    assert value == 7 and type(value) is int
    assert type(check_int("seed", np.uint64(2**63))) is int


@pytest.mark.parametrize(
    ("value", "minimum", "maximum", "expected"),
    [
        (0, 1, None, "an int >= 1"),
        (9, 0, 8, r"an int in \[0, 8\]"),
        (9, None, 8, "an int <= 8"),
        ("3", None, None, "an int"),
        (True, 0, None, "an int >= 0"),
        (2.5, 1, None, "an int >= 1"),
    ],
)
def test_check_int_names_the_argument_and_the_value(value, minimum, maximum, expected):
    with pytest.raises(ValueError, match=rf"Expected `width` to be {expected}\. ") as error:
        check_int("width", value, minimum=minimum, maximum=maximum)
    assert str(error.value).endswith(f"Received: width={value!r}")


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: mmrep.fusion.ConcatFusion(projection_dim=np.int64(4)), "projection_dim"),
        (lambda: mmrep.heads.FisherVector(num_components=np.int64(2)), "num_components"),
        (lambda: mmrep.heads.NetVLAD(np.int32(3), ghost_clusters=np.int64(1)), "num_clusters"),
        (lambda: mmrep.heads.VAEHead(np.int64(2), hidden_units=(np.int64(4),)), "latent_dim"),
        (lambda: mmrep.fusion.LowRankTensorFusion(np.int64(3), np.int64(2)), "rank"),
    ],
)
def test_numpy_int_widths_reach_get_config_as_python_ints(make, key):
    layer = make()
    config = layer.get_config()
    assert type(config[key]) is int
    json.dumps(config)  # a NumPy int here would raise TypeError
    assert type(layer).from_config(json.loads(json.dumps(config))).get_config() == config
