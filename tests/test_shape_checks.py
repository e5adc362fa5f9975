"""The tests run with jaxtyping's runtime shape checks on (see conftest.py): a tensor that
contradicts its annotation fails at the call, before the function runs."""

import os

import jaxtyping
import pytest
import torch

from steering.adapters.innerpissa import cayley

pytestmark = pytest.mark.skipif(bool(os.environ.get("STEERSCOPE_NO_SHAPE_CHECKS")), reason="shape checks turned off")


def test_a_non_square_generator_is_refused_by_its_annotation():
    with pytest.raises(jaxtyping.TypeCheckError, match=r"parameter 'generator'"):
        cayley(torch.zeros(2, 3), 1.0, 0.5)


def test_named_dimensions_must_agree_across_arguments_and_the_result():
    from jaxtyping import Float
    from torch import Tensor

    from tests.shapecheck import shapes_only

    @shapes_only
    def project(hs: Float[Tensor, "n d"], U: Float[Tensor, "d r"]) -> Float[Tensor, "n r"]:
        return hs @ U if hs.shape[0] > 1 else (hs @ U).T

    assert project(torch.ones(3, 4), torch.ones(4, 2)).shape == (3, 2)
    with pytest.raises(TypeError, match=r"argument 'U' does not match"):
        project(torch.ones(3, 4), torch.ones(5, 2))
    with pytest.raises(TypeError, match=r"result does not match"):
        project(torch.ones(1, 4), torch.ones(4, 2))  # returns [2, 1] for "n r" = [1, 2]
