"""Direction methods against independent computations, and recovery of a planted direction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import probes
from probes import sublayers as sl
from steering import directions
from tests.tiny import tiny_model


def synthetic_acts(n: int = 40, d: int = 16, seed: int = 0) -> tuple[probes.Activations, torch.Tensor]:
    """States where positive = negative + a planted offset along ``planted`` plus noise."""
    generator = torch.Generator().manual_seed(seed)
    planted = torch.nn.functional.normalize(torch.randn(d, generator=generator), dim=0)
    negative = torch.randn(n, d, generator=generator) * 2
    strength = 1 + torch.rand(n, 1, generator=generator)
    positive = negative + 3 * strength * planted + 0.3 * torch.randn(n, d, generator=generator)
    hs = torch.stack([positive, negative], 1)[:, :, None]
    return probes.Activations({(0, "resid"): hs}, n_layers=1), planted


def test_pca_diff_equals_first_component_of_independent_pca():
    acts, _ = synthetic_acts()
    diffs = (acts[0, "resid"][:, 0, 0] - acts[0, "resid"][:, 1, 0]).double().numpy()
    centred = diffs - diffs.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    direction = directions.compute("pca_diff", acts, 0, "resid")
    cosine = abs(float(direction.vector.double() @ torch.from_numpy(vt[0])))
    assert cosine > 0.999
    assert direction.meta["explained_variance"] == pytest.approx(
        (np.linalg.svd(centred, compute_uv=False) ** 2)[0] / (centred**2).sum(), rel=1e-6
    )


def test_mean_diff_is_the_normalised_mean_difference_and_unit_norm():
    acts, _ = synthetic_acts()
    hs = acts[0, "resid"][:, :, 0].double()
    expected = hs[:, 0].mean(0) - hs[:, 1].mean(0)
    direction = directions.compute("mean_diff", acts, 0, "resid")
    torch.testing.assert_close(direction.vector.double(), expected / expected.norm(), atol=1e-6, rtol=1e-6)
    assert direction.scale == pytest.approx(float((hs[:, 0] - hs[:, 1]).norm(dim=-1).median()), rel=1e-6)


@pytest.mark.parametrize("method", ["mean_diff", "pca_diff", "pca_center", "pca_diff_weighted", "logistic"])
def test_signs_are_calibrated_so_positive_projects_higher(method):
    acts, planted = synthetic_acts()
    flipped = probes.Activations({(0, "resid"): acts[0, "resid"].flip(1)}, n_layers=1)  # swap sides
    for data, sign in ((acts, 1), (flipped, -1)):
        direction = directions.compute(method, data, 0, "resid")
        assert float(direction.vector @ planted) * sign > 0.5
        assert direction.meta["vote_share"] >= 0.9
        diffs = data[0, "resid"][:, 0, 0] - data[0, "resid"][:, 1, 0]
        assert float((diffs @ direction.vector > 0).float().mean()) == pytest.approx(direction.meta["vote_share"])
        assert torch.linalg.vector_norm(direction.vector).item() == pytest.approx(1.0, abs=1e-5)


def test_random_direction_is_seeded_and_unrelated():
    acts, planted = synthetic_acts(d=64)
    a = directions.compute("random", acts, 0, "resid", seed=1)
    b = directions.compute("random", acts, 0, "resid", seed=1)
    c = directions.compute("random", acts, 0, "resid", seed=2)
    assert torch.equal(a.vector, b.vector) and not torch.equal(a.vector, c.vector)
    assert abs(float(a.vector @ planted)) < 0.5


MARKERS = [("P", "N", 0.5), ("Q", "M", 1.5), ("R", "L", 3.0)]  # positive, negative, planted offset


def planted_model(seed: int = 0):
    """A tiny Llama with small weights whose marker-token embeddings differ along a planted vector
    by different amounts (so the differences vary along it, as pca_diff's centring requires)."""
    model = tiny_model("llama", seed=seed)
    torch_model = sl.unwrap(model)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in torch_model.parameters():
            if parameter.ndim == 2:
                parameter.normal_(0, 0.02, generator=generator)
        planted = torch.nn.functional.normalize(torch.randn(32, generator=generator), dim=0)
        embed = torch_model.model.embed_tokens.weight
        for positive, negative, offset in MARKERS:
            p, n = (model.tokenizer.convert_tokens_to_ids(t) for t in (positive, negative))
            embed[n] = embed[p] - offset * planted
    return model, planted


PREFIXES = [
    "the cat",
    "a long road home",
    "so",
    "weather report",
    "my neighbour's dog",
    "tea or",
    "ten green",
    "under the bridge",
    "he said",
    "look at this",
    "numbers 1 2 3",
    "why not",
    "the end of the",
    "we",
    "a b",
]
PLANTED_PAIRS = [(f"{prefix} {MARKERS[i % 3][0]}", f"{prefix} {MARKERS[i % 3][1]}") for i, prefix in enumerate(PREFIXES)]


@pytest.mark.parametrize(
    "method",
    [
        "mean_diff",
        "pca_diff",
        "pca_center",
        "pca_diff_weighted",
        "logistic",
        "uspace_pca",
        "uspace_mean",
        "svd_grad",
        "fisher_cov",
        "fisher_ief",
        "fisher_dual",
    ],
)
def test_each_method_recovers_a_planted_direction(method):
    model, planted = planted_model()
    acts = probes.collect(model, PLANTED_PAIRS, layers=[0, 1], sublayers="resid", progress=False)
    if method in ("svd_grad", "fisher_cov", "fisher_ief", "fisher_dual"):
        # the separation loss read at the same layer, without the coherence term: every text's
        # gradient is then −p, so the natural gradient must come back to p = the planted axis
        options = {"model": model, "pairs": PLANTED_PAIRS, "loss_layer": 0, "coherence": 0.0}
    else:
        options = {"model": model} if method.startswith("uspace") else {}
    direction = directions.compute(method, acts, 0, "resid", **options)
    assert float(direction.vector @ planted) > 0.9, f"{method}: cos {float(direction.vector @ planted):.3f}"
    if method.startswith("uspace"):
        assert direction.space == "uspace" and direction.coords is not None
        U = torch.linalg.svd(sl.unwrap(model).model.layers[0].mlp.down_proj.weight.detach(), full_matrices=False).U
        # the activation-space vector is U δs
        torch.testing.assert_close(direction.vector, torch.nn.functional.normalize(U @ direction.coords, dim=0), atol=1e-5, rtol=1e-4)


def test_unknown_method_and_missing_model_are_clear_errors():
    acts, _ = synthetic_acts()
    with pytest.raises(ValueError, match="Unknown direction method 'pca'.*mean_diff"):
        directions.compute("pca", acts, 0, "resid")
    with pytest.raises(ValueError, match="uspace_pca needs model: compute\\('uspace_pca', acts, layer, kind, model=model\\)"):
        directions.compute("uspace_pca", acts, 0, "resid")
    with pytest.raises(ValueError, match="fisher_cov needs model and pairs"):
        directions.compute("fisher_cov", acts, 0, "resid")


def test_directions_round_trip_through_safetensors(tmp_path):
    model, _ = planted_model()
    acts = probes.collect(model, PLANTED_PAIRS, layers=[0], sublayers="resid", progress=False)
    found = [directions.compute("pca_diff", acts, 0, "resid"), directions.compute("uspace_pca", acts, 0, "resid", model=model)]
    loaded = directions.load_directions(directions.save_directions(found, tmp_path / "dirs.safetensors"))
    for a, b in zip(found, loaded):
        assert (
            torch.equal(a.vector, b.vector)
            and a.scale == b.scale
            and (a.layer, a.kind, a.method, a.space) == (b.layer, b.kind, b.method, b.space)
        )
    assert torch.equal(found[1].coords, loaded[1].coords)
