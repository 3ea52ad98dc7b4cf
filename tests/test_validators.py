"""The shared validators of lazyconn._utils, and the messages the public functions give with them."""

import numpy as np
import pytest

from lazyconn._utils import check_int, check_positive, check_real
from lazyconn.exceptions import ParameterError, ParameterTypeError


@pytest.mark.parametrize("value", [0, 3, np.int16(2), np.uint8(7)])
def test_check_int_accepts_integers_in_range(value):
    got = check_int("n", value, low=0, high=7)
    assert got == int(value) and type(got) is int


@pytest.mark.parametrize(
    "value, kwargs, error, match",
    [
        (True, {}, ParameterError, r"n=True is not valid; expected an int\."),
        (1.0, {"low": 1}, ParameterError, r"n=1\.0 is not valid; expected an int >= 1\."),
        ("2", {}, ParameterTypeError, None),
        (0, {"low": 1}, ParameterError, r"n=0 is not valid; expected an int >= 1\."),
        (9, {"low": 1, "high": 6}, ParameterError, r"expected an int in \[1, 6\]\."),
        (None, {}, ParameterError, r"n=None is not valid"),
        (-1, {"low": 0, "allow_none": True}, ParameterError, r"expected None or an int >= 0"),
        (2.5, {"expected": "a count"}, ParameterError, r"n=2\.5 is not valid; expected a count\."),
    ],
)
def test_check_int_refuses(value, kwargs, error, match):
    if error is ParameterTypeError:
        with pytest.raises(ParameterTypeError, match=r"n='2' has type str; expected an int\."):
            check_int("n", value, type_error=ParameterTypeError, **kwargs)
        return
    with pytest.raises(error, match=match):
        check_int("n", value, **kwargs)


def test_check_int_none_when_allowed():
    assert check_int("n", None, allow_none=True) is None


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.25), np.int64(1)])
def test_check_real_accepts_finite_numbers_in_range(value):
    assert check_real("x", value, low=0, high=1, low_inclusive=False) == float(value)


@pytest.mark.parametrize(
    "value, kwargs, match",
    [
        (False, {}, r"x=False is not valid; expected a finite number\."),
        (np.nan, {}, r"x=nan is not valid"),
        (np.inf, {"low": 0}, r"x=inf is not valid; expected a finite number >= 0\."),
        ("1", {}, r"x='1' is not valid"),
        (0, {"low": 0, "low_inclusive": False}, r"expected a finite number > 0\."),
        (1, {"high": 1, "high_inclusive": False}, r"expected a finite number < 1\."),
        (2, {"low": 0, "high": 1}, r"expected a finite number in \[0, 1\]\."),
        (-1, {"low": 0, "allow_none": True}, r"expected None or a finite number >= 0\."),
        (
            -1,
            {"low": 0, "expected": "a size in mm"},
            r"x=-1 is not valid; expected a size in mm\.",
        ),
    ],
)
def test_check_real_refuses(value, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        check_real("x", value, **kwargs)


def test_check_positive_keeps_its_messages_and_value():
    assert check_positive("r", 2) == 2 and type(check_positive("r", 2)) is int
    assert check_positive("r", 0, strict=False) == 0
    assert check_positive("r", None, allow_none=True) is None
    with pytest.raises(ParameterError, match=r"r=0 is not valid; expected a finite number > 0\."):
        check_positive("r", 0)
    with pytest.raises(ParameterError, match=r"r=-1 is not valid; expected a finite number >= 0"):
        check_positive("r", -1, strict=False)


# --- the public functions that use them -------------------------------------------------


def test_public_messages():
    from lazyconn import signal
    from lazyconn.image import load_mni152_template
    from lazyconn.maskers import NiftiSpheresMasker
    from lazyconn.masking import intersect_masks

    x = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(ParameterError, match=r"t_r=-2 is not valid; expected the repetition"):
        signal.clean(x, t_r=-2)
    with pytest.raises(ParameterError, match=r"low_pass=0 is not valid; expected None or a"):
        signal.clean(x, t_r=2.0, low_pass=0)
    with pytest.raises(ParameterError, match=r"butterworth__order=0 is not valid"):
        signal.clean(x, t_r=2.0, low_pass=0.1, butterworth__order=0)
    with pytest.raises(ParameterError, match=r"n_confounds=0 is not valid; expected an integer"):
        signal.high_variance_confounds(x, n_confounds=0)
    with pytest.raises(ParameterError, match=r"percentile=101 is not valid; expected a number"):
        signal.high_variance_confounds(x, percentile=101)
    with pytest.raises(ParameterError, match=r"resolution=-1 is not valid; expected None or a"):
        load_mni152_template(resolution=-1)
    with pytest.raises(ParameterError, match=r"radius=-1 is not valid; expected None or a num"):
        NiftiSpheresMasker([(0, 0, 0)], radius=-1).fit()
    with pytest.raises(ParameterError, match=r"threshold=2 is not valid; expected a number in"):
        intersect_masks([], threshold=2)
