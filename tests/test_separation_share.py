"""The separation table's ``pc1_share`` is PCA's explained-variance ratio, and silent where nothing varies."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.decomposition import PCA

from analysis.measures.separation import pc1_share


def test_pc1_share_equals_sklearns_explained_variance_ratio():
    diffs = np.random.default_rng(0).normal(size=(12, 7)) * np.arange(1, 8)
    assert np.isclose(pc1_share(diffs), PCA(n_components=1).fit(diffs).explained_variance_ratio_[0], rtol=1e-10)


def test_differences_that_do_not_vary_give_nan_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(pc1_share(np.ones((6, 4))))  # sklearn's PCA warns "invalid value encountered in divide" here
        assert np.isnan(pc1_share(np.ones((1, 4))))
