"""DeLong against a hand example and a brute-force U-statistic computation; the bootstrap's coverage and pairing."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from nnunet_mvext.classification.metrics import classification_metrics
from nnunet_mvext.classification.statistics import (
    BOOTSTRAP_METRICS,
    batch_metrics,
    bootstrap_intervals,
    delong_auc,
    delong_covariance,
    delong_paired_test,
    metric_names,
    metrics_with_intervals,
    newcombe_auc_interval,
    paired_bootstrap,
    stratified_bootstrap_indices,
)
from nnunet_mvext.errors import MVExtError


def _brute_force_delong(y, scores):
    """DeLong 1988 written out: psi(X, Y) = 1 if X > Y, 1/2 if equal; V10_i = mean_j psi(X_i, Y_j),
    V01_j = mean_i psi(X_i, Y_j); S = cov(V10)/m + cov(V01)/n. O(m n), no ranks."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])  # (K, m, n)
    v10, v01 = psi.mean(2), psi.mean(1)
    return psi.mean((1, 2)), np.cov(v10) / pos.shape[1] + np.cov(v01) / neg.shape[1]


def test_delong_hand_example():
    # positives 0.9, 0.6; negatives 0.7, 0.2: psi = [[1, 1], [0, 1]] -> AUC 3/4,
    # V10 = (1, 1/2), V01 = (1/2, 1): S10 = S01 = 1/8, Var = 1/8 / 2 + 1/8 / 2 = 1/8.
    d = delong_auc([1, 1, 0, 0], [0.9, 0.6, 0.7, 0.2])
    assert d["auc"] == pytest.approx(0.75) and d["variance"] == pytest.approx(0.125)
    assert d["low"] == pytest.approx(max(0, 0.75 - 1.959964 * np.sqrt(0.125)))
    assert d["high"] == 1.0  # 0.75 + 0.69 clipped


def test_delong_matches_brute_force_with_ties():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(37, int), np.zeros(51, int)]
    a = np.round(rng.normal(y * 1.0, 1.0), 1)  # rounding makes ties
    b = np.round(0.6 * a + rng.normal(y * 0.3, 0.8), 1)
    aucs, cov = delong_covariance(y, np.stack([a, b]))
    ref_aucs, ref_cov = _brute_force_delong(y, np.stack([a, b]))
    np.testing.assert_allclose(aucs, ref_aucs, rtol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-10)
    assert aucs[0] == pytest.approx(skm.roc_auc_score(y, a))
    t = delong_paired_test(y, a, b)
    var = ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1]
    z = (ref_aucs[0] - ref_aucs[1]) / np.sqrt(var)
    assert t["variance"] == pytest.approx(var) and t["z"] == pytest.approx(z)
    assert t["p"] == pytest.approx(2 * stats.norm.sf(abs(z)))
    assert t["low"] == pytest.approx(t["difference"] - 1.959964 * np.sqrt(var), rel=1e-5)
    assert 0 < t["p"] < 1 and t["auc_a"] > t["auc_b"]


def test_delong_paired_identical_scores_and_too_few_cases():
    y = [1, 1, 0, 0, 1]
    s = [0.9, 0.3, 0.4, 0.1, 0.8]
    t = delong_paired_test(y, s, s)
    assert t["difference"] == 0 and t["z"] is None and t["p"] == 1.0
    with pytest.raises(MVExtError, match="at least two cases of each class"):
        delong_auc([1, 0, 0], [0.9, 0.1, 0.2])


def test_newcombe_interval_reproduces_the_published_example():
    """SingleCaseES (R) documents NAP(A = c(20, 20, 26, 25, 22, 23), B = c(28, 25, 24, 27, 30, 30, 29)):
    0.9167, 95 % CI [0.5973, 0.9860], 90 % CI [0.6591, 0.9822], Newcombe's method 5."""
    neg, pos = [20, 20, 26, 25, 22, 23], [28, 25, 24, 27, 30, 30, 29]
    auc = skm.roc_auc_score([0] * 6 + [1] * 7, neg + pos)
    assert auc == pytest.approx(0.9166667, abs=1e-7)
    assert newcombe_auc_interval(auc, 7, 6) == pytest.approx((0.5973194, 0.9859977), abs=1e-6)
    assert newcombe_auc_interval(auc, 7, 6, confidence=0.90) == pytest.approx((0.6591092, 0.9822248), abs=1e-6)


def test_auc_of_one_or_zero_gets_a_score_interval_of_non_zero_width():
    """DeLong's variance is 0 and every bootstrap resample is 1 at a perfect separation: [1, 1] claims certainty.
    Newcombe's bound is below 1, solves its score equation, joins the interval of an AUC just below 1 continuously,
    narrows with more cases, and mirrors at AUC 0."""
    y = np.r_[np.ones(8, int), np.zeros(12, int)]
    p1 = np.r_[np.linspace(0.6, 0.9, 8), np.linspace(0.1, 0.5, 12)]
    r = metrics_with_intervals(y, np.c_[1 - p1, p1], ["neg", "pos"], n_resamples=200)
    iv = r["intervals"]["auc"]
    assert r["auc"] == 1.0 and iv["high"] == 1.0 and 0.5 < iv["low"] < 0.95
    assert iv["method"] == "Newcombe score interval (method 5)" and "AUC is 1: DeLong" in r["auc_interval_note"]
    low = iv["low"]
    h, z = (8 + 12) / 2 - 1, stats.norm.ppf(0.975)
    variance = low * (1 - low) * (2 + h + (1 + 2 * h) * low * (1 - low)) / (8 * 12 * (2 - low) * (1 + low))
    assert 1 - low == pytest.approx(z * np.sqrt(variance), rel=1e-9)
    assert low == pytest.approx(newcombe_auc_interval(1 - 1e-12, 8, 12)[0], abs=1e-6)
    assert newcombe_auc_interval(1.0, 80, 120)[0] > low
    assert newcombe_auc_interval(0.0, 8, 12) == pytest.approx((0.0, 1 - low))
    flipped = metrics_with_intervals(1 - y, np.c_[1 - p1, p1], ["neg", "pos"], n_resamples=200)
    assert flipped["auc"] == 0.0 and flipped["intervals"]["auc"]["high"] == pytest.approx(1 - low)
    # more classes: every one-vs-rest AUC is 1; the macro mean of Bonferroni-level intervals
    y3 = np.repeat([0, 1, 2], [5, 6, 7])
    r3 = metrics_with_intervals(y3, np.eye(3)[y3] * 0.7 + 0.1, ["a", "b", "c"], n_resamples=200)
    bounds = [newcombe_auc_interval(1.0, m, 18 - m, confidence=1 - 0.05 / 3)[0] for m in (5, 6, 7)]
    assert r3["intervals"]["auc"]["low"] == pytest.approx(np.mean(bounds)) and r3["intervals"]["auc"]["low"] < 1
    assert "auc_interval_note" in r3
    assert "auc_interval_note" not in metrics_with_intervals(Y_NOISY, P_NOISY, ["neg", "pos"], n_resamples=50)


Y_NOISY = np.array([1, 1, 1, 0, 0, 0])
P_NOISY = np.array([[.2, .8], [.6, .4], [.3, .7], [.7, .3], [.4, .6], [.8, .2]])


def _random_case_set(rng, n, k):
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    p = np.round(rng.dirichlet(np.ones(k), n), 1)  # ties, and some classes rarely the arg-max
    p[:, 0] += 1e-9 * rng.random(n)
    return y, p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_vectorised_metrics_equal_scikit_learn(k):
    rng = np.random.default_rng(k)
    for _ in range(5):
        y, p = _random_case_set(rng, 40, k)
        fast = {name: v[0] for name, v in batch_metrics(y[None], p[None]).items()}
        ref = classification_metrics(y, p, [f"c{i}" for i in range(k)])
        assert set(fast) == set(metric_names(k)) and ("lld_mmri_score" in fast) == (k > 2)
        for name in metric_names(k):
            assert fast[name] == pytest.approx(ref[name], abs=1e-12), name
        pred = p.argmax(1)
        assert fast["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
        assert fast["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
        if k > 2:
            assert fast["auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
            assert fast["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
            # the last class absent from the reference and the predictions: left out, as scikit-learn does
            keep = (y != k - 1) & (pred != k - 1)
            sub = {name: v[0] for name, v in batch_metrics(y[keep][None], p[keep][None]).items()}
            assert sub["f1"] == pytest.approx(skm.f1_score(y[keep], pred[keep], average="macro"))
            assert sub["f1"] == pytest.approx(classification_metrics(y[keep], p[keep], ref["class_names"])["f1"])


def test_resamples_keep_class_counts_and_are_seeded():
    y = np.array([0] * 7 + [1] * 3 + [2] * 5)
    idx = stratified_bootstrap_indices(y, 50, np.random.default_rng(0))
    assert idx.shape == (50, 15)
    for row in idx:
        assert np.bincount(y[row], minlength=3).tolist() == [7, 3, 5]
    assert len({tuple(r) for r in idx}) > 40  # resamples differ (with replacement)
    p = np.random.default_rng(1).dirichlet(np.ones(3), 15)
    a = bootstrap_intervals(y, p, ["a", "b", "c"], n_resamples=200, seed=3)
    b = bootstrap_intervals(y, p, ["a", "b", "c"], n_resamples=200, seed=3)
    c = bootstrap_intervals(y, p, ["a", "b", "c"], n_resamples=200, seed=4)
    assert a == b and a["auc"] != c["auc"]


def test_bootstrap_and_delong_intervals_cover_the_truth_at_the_nominal_rate():
    """Binormal scores: positives N(mu, 1), negatives N(0, 1), 30 of each. True AUC = Phi(mu / sqrt 2); true
    accuracy at the arg-max (p = sigmoid(score - mu/2), threshold mu/2) = Phi(mu / 2). 200 data sets, 1000
    resamples each: the 95 % intervals must cover the truth in about 95 % of them."""
    rng = np.random.default_rng(2024)
    mu, m = 1.2, 30
    true_auc, true_acc = stats.norm.cdf(mu / np.sqrt(2)), stats.norm.cdf(mu / 2)
    y = np.r_[np.ones(m, int), np.zeros(m, int)]
    hits = {"auc": 0, "accuracy": 0, "delong": 0}
    reps = 200
    for rep in range(reps):
        score = rng.normal(y * mu, 1.0)
        p1 = 1 / (1 + np.exp(-(score - mu / 2)))
        iv = bootstrap_intervals(y, np.c_[1 - p1, p1], ["neg", "pos"], n_resamples=1000, seed=rep)
        hits["auc"] += iv["auc"]["low"] <= true_auc <= iv["auc"]["high"]
        hits["accuracy"] += iv["accuracy"]["low"] <= true_acc <= iv["accuracy"]["high"]
        d = delong_auc(y, p1)
        hits["delong"] += d["low"] <= true_auc <= d["high"]
    for name, h in hits.items():
        assert 0.88 <= h / reps <= 0.99, (name, h / reps)


def test_paired_bootstrap_pairs_the_resamples():
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(40, int), np.zeros(40, int)]
    good = 1 / (1 + np.exp(-rng.normal((2 * y - 1) * 1.5, 1.0)))
    bad = 1 / (1 + np.exp(-rng.normal(0, 1.0, 80)))
    pg, pb = np.c_[1 - good, good], np.c_[1 - bad, bad]
    same = paired_bootstrap(y, pg, pg, ["n", "p"], n_resamples=500)
    assert all(same[n]["difference"] == 0 and same[n]["low"] == 0 == same[n]["high"] and same[n]["p"] == 1
               for n in BOOTSTRAP_METRICS)
    diff = paired_bootstrap(y, pg, pb, ["n", "p"], n_resamples=500)
    assert diff["auc"]["difference"] == pytest.approx(skm.roc_auc_score(y, good) - skm.roc_auc_score(y, bad))
    assert diff["auc"]["low"] > 0 and diff["auc"]["p"] < 0.01
    # the paired interval of a small difference is narrower than the unpaired one: the resamples are shared
    noisy = np.clip(good + rng.normal(0, 0.05, 80), 0, 1)
    pn = np.c_[1 - noisy, noisy]
    paired = paired_bootstrap(y, pg, pn, ["n", "p"], n_resamples=500)["auc"]
    single = bootstrap_intervals(y, pg, ["n", "p"], n_resamples=500)["auc"]
    assert paired["high"] - paired["low"] < 0.5 * (single["high"] - single["low"])


def test_metrics_with_intervals_headline_is_delong_and_undefined_metrics_have_no_interval():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(20, int), np.zeros(25, int)]
    p1 = np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(0, 0.25, 45), 0, 1)
    r = metrics_with_intervals(y, np.c_[1 - p1, p1], ["neg", "pos"], n_resamples=300)
    d = delong_auc(y, p1)
    assert r["intervals"]["auc"]["method"] == "DeLong"
    assert (r["intervals"]["auc"]["low"], r["intervals"]["auc"]["high"]) == (d["low"], d["high"])
    assert r["intervals"]["accuracy"]["method"].startswith("stratified bootstrap")
    for name in BOOTSTRAP_METRICS:
        assert r["intervals"][name]["low"] <= r[name] <= r["intervals"][name]["high"], name
    single = metrics_with_intervals([0] * 6, np.c_[1 - p1[:6], p1[:6]], ["neg", "pos"], n_resamples=100)
    assert single["auc"] is None and single["intervals"]["auc"]["low"] is None
    assert single["sensitivity"] is None and single["intervals"]["sensitivity"]["high"] is None
    assert single["intervals"]["specificity"]["low"] is not None


def test_bootstrap_macro_f1_of_a_perfect_classifier_without_one_class_is_one():
    y = np.array([0] * 6 + [1] * 5)
    p = np.eye(3)[y] * 0.8 + 0.1
    iv = bootstrap_intervals(y, p, ["a", "b", "c"], n_resamples=100)["f1"]
    assert (iv["low"], iv["high"]) == (1.0, 1.0)


def test_threshold_rule_in_bootstrap_equals_classification_metrics():
    rng = np.random.default_rng(11)
    y, p = _random_case_set(rng, 60, 2)
    fast = batch_metrics(y[None], p[None], threshold=0.3)
    ref = classification_metrics(y, p, ["n", "p"], threshold=0.3)
    assert ref["confusion_matrix"] == skm.confusion_matrix(y, (p[:, 1] >= 0.3).astype(int)).tolist()
    for name in BOOTSTRAP_METRICS:
        assert fast[name][0] == pytest.approx(ref[name]), name
    assert ref["sensitivity"] != classification_metrics(y, p, ["n", "p"])["sensitivity"]
