"""Each method against an independent computation of its defining formula."""
import numpy as np
import pytest
import torch

from crossgate.methods import create_method, list_methods
from tests.conftest import blobs


def test_gda_equals_sklearn_lda_with_the_matching_shrinkage():
    """GDA's precision D·pinv((N-1)Σ + tr(Σ)I) is, up to the factor κ = D(N-1) / (N(N-1+D)), the inverse of
    scikit-learn's shrunk covariance (1-s)S + s·tr(S)/D·I at s = D/(N-1+D) (S the pooled biased covariance,
    equal class sizes); so W = κ·coef_ and b - log(1/C) = κ·(intercept_ - log(1/C))."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from crossgate.features import unit_rows
    from crossgate.methods.gda import gda_head

    x, y, _ = blobs(n_classes=4, per_class=6, dim=10, spread=0.5)
    x = unit_rows(x).astype(np.float64)
    n, d, c = len(x), x.shape[1], 4
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=d / (n - 1 + d)).fit(x, y)
    w, b = gda_head(x, y, c)
    kappa = d * (n - 1) / (n * (n - 1 + d))
    np.testing.assert_allclose(w, kappa * lda.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(b - np.log(1 / c), kappa * (lda.intercept_ - np.log(1 / c)), rtol=1e-8, atol=1e-10)


def test_gda_logits_are_zero_shot_plus_alpha_times_the_gda_head():
    from crossgate.features import unit_rows
    from crossgate.methods.gda import GDAConfig, gda_head

    x, y, text = blobs()
    clf = create_method("gda", config=GDAConfig(alphas=(0.7,))).fit(x, y, text=text)
    w, b = gda_head(unit_rows(x), y, 4)
    xu = unit_rows(x)
    expected = 100 * xu @ text.class_means().T + 0.7 * (xu @ w.T + b)
    np.testing.assert_allclose(clf._logits(x), expected, rtol=1e-4, atol=1e-3)


def test_proker_equals_an_explicit_kernel_ridge_solve():
    """A = (K/λ + I)⁻¹ (Y - S Tᵀ) (the authors' formula) = λ × scikit-learn's KernelRidge dual coefficients."""
    from sklearn.kernel_ridge import KernelRidge

    from crossgate.features import unit_rows
    from crossgate.methods.proker import ProKeRConfig

    x, y, text = blobs()
    beta, lam = 1.7, 0.3
    clf = create_method("proker", config=ProKeRConfig(betas=(beta,), lambdas=(lam,))).fit(x, y, text=text)
    s = unit_rows(x).astype(np.float64)
    t = text.class_means().astype(np.float64)
    kernel = np.exp(-beta * (1 - s @ s.T))
    residual = np.eye(4)[y] - s @ t.T
    explicit = np.linalg.solve(kernel / lam + np.eye(len(s)), residual)
    np.testing.assert_allclose(clf.coef_, explicit, rtol=1e-4, atol=1e-5)
    krr = KernelRidge(alpha=lam, kernel="precomputed").fit(kernel, residual)
    np.testing.assert_allclose(clf.coef_, lam * krr.dual_coef_, rtol=1e-4, atol=1e-5)
    xt = unit_rows(blobs(seed=4)[0]).astype(np.float64)
    expected = xt @ t.T + np.exp(-beta * (1 - xt @ s.T)) @ explicit
    np.testing.assert_allclose(clf._logits(xt), expected, rtol=1e-4, atol=1e-4)


def test_probe_adamw_equals_torch_adamw_step_for_step():
    """Two stacked settings (other lr and decay) updated by adamw_update equal torch.optim.AdamW run on each
    alone, with Lin et al.'s learning rate at every update (warm-up from 1e-5, then cosine)."""
    from torch.nn import functional as F

    from crossgate.methods.probe import LOGIT_SCALE, ProbeSearch, _Track, adamw_update, lr_at

    rng = np.random.default_rng(0)
    n, d, c, bs, steps = 40, 12, 5, 8, 70
    pool = torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, c, n))
    init = torch.from_numpy(rng.normal(size=(d, c)).astype(np.float32)) * 0.1
    settings = [(1e-3, 1e-2), (1e-2, 0.0)]
    search = ProbeSearch(iterations=steps, warmup=10)
    w = init.T.contiguous()[None].repeat(2, 1, 1)  # the track holds (settings, classes, dims)
    track = _Track(ids=[0, 1], lr=torch.tensor([s[0] for s in settings]).view(-1, 1, 1),
                   wd=torch.tensor([s[1] for s in settings]).view(-1, 1, 1), n_img=bs, n_txt=0, w=w,
                   m=torch.zeros_like(w), v=torch.zeros_like(w), gens=[])
    params = [torch.nn.Parameter(init.clone()) for _ in settings]
    optims = [torch.optim.AdamW([p], lr=lr, weight_decay=wd, eps=1e-8)
              for p, (lr, wd) in zip(params, settings, strict=True)]
    minus_one = torch.full((2, bs, 1), -1.0 / bs)
    for step in range(1, steps + 1):
        idx = torch.from_numpy(rng.integers(0, n, (2, bs)))
        adamw_update(track, pool[idx], labels[idx], minus_one, step, search)
        factor, absolute = lr_at(step, search.warmup, search.iterations)
        for j, (p, opt) in enumerate(zip(params, optims, strict=True)):
            opt.param_groups[0]["lr"] = settings[j][0] * factor + absolute
            opt.zero_grad()
            F.cross_entropy(LOGIT_SCALE * pool[idx[j]] @ p, labels[idx[j]]).backward()
            opt.step()
    for j, p in enumerate(params):
        np.testing.assert_allclose(track.w[j].T.numpy(), p.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_logreg_equals_sklearn_logistic_regression_at_the_same_penalty():
    """mean CE + l2·||W||² (bias free) is scikit-learn's ½||W||² + C·ΣCE with C = 1 / (2·N·l2)."""
    from sklearn.linear_model import LogisticRegression

    from crossgate.features import unit_rows
    from crossgate.methods.linear import LogRegConfig

    x, y, _ = blobs(spread=0.8)
    l2 = 1e-2
    ours = create_method("logreg", config=LogRegConfig(l2_grid=(l2,), max_iter=500)).fit(x, y)
    theirs = LogisticRegression(C=1 / (2 * len(x) * l2), tol=1e-10, max_iter=10_000).fit(unit_rows(x), y)
    xt = blobs(seed=3, spread=0.8)[0]
    np.testing.assert_allclose(ours.predict_proba(xt), theirs.predict_proba(unit_rows(xt)), atol=2e-4)


def _switched_off():
    from crossgate.methods.ape import APEConfig
    from crossgate.methods.clap import CLAPConfig
    from crossgate.methods.gda import GDAConfig
    from crossgate.methods.proker import ProKeRConfig
    from crossgate.methods.taskres import TaskResConfig
    from crossgate.methods.tip import TipConfig, TipFConfig

    return {"gda": GDAConfig(alphas=(0.0,)), "proker": ProKeRConfig(lambdas=(0.0,)),
            "clap": CLAPConfig(epochs=0), "taskres": TaskResConfig(alphas=(0.0,)),
            "ape": APEConfig(alphas=(0.0,)), "tip": TipConfig(alphas=(0.0,)),
            "tipf": TipFConfig(alphas=(0.0,))}


@pytest.mark.parametrize("method", sorted(_switched_off()))
def test_methods_from_zero_shot_equal_zeroshot_with_the_adaptation_off(method):
    x, y, text = blobs(spread=0.6)
    xv, yv, _ = blobs(seed=1, spread=0.6)
    xt = blobs(seed=2, per_class=30, spread=0.6)[0]
    zero_shot = create_method("zeroshot").fit(x, y, text=text)
    off = create_method(method, config=_switched_off()[method], random_state=1).fit(x, y, text=text, val=(xv, yv))
    scale = 100.0 if method == "proker" else 1.0  # ProKeR's zero-shot term is the bare cosine (the authors')
    np.testing.assert_allclose(scale * off._logits(xt), zero_shot._logits(xt), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(off.predict(xt), zero_shot.predict(xt))


def test_every_method_starting_from_zero_shot_is_covered():
    from_zero_shot = {"gda", "proker", "clap", "taskres", "ape", "tip", "tipf"}
    assert from_zero_shot == set(_switched_off()) and from_zero_shot <= set(list_methods())


def test_ape_channel_criterion_equals_the_pairwise_loop():
    """The closed-form pair mean equals the authors' loop over every cross-class pair of samples."""
    from crossgate.methods.ape import channel_criterion

    rng = np.random.default_rng(0)
    c, shots, d = 3, 2, 5
    text_w = torch.from_numpy(rng.normal(size=(c, d)))
    keys = torch.from_numpy(rng.normal(size=(c * shots, d)))
    labels = torch.arange(c).repeat_interleave(shots)
    feats = [[text_w[i]] + [keys[j] for j in range(len(keys)) if labels[j] == i] for i in range(c)]
    total, count = torch.zeros(d, dtype=torch.float64), 0
    for i in range(c):
        for j in range(c):
            if i != j:
                for a in feats[i]:
                    for b in feats[j]:
                        total += a * b
                        count += 1
    expected = -0.7 * total / count + 0.3 * text_w.var(dim=0)  # the variance over classes of W (D, C)
    np.testing.assert_allclose(channel_criterion(text_w, keys, labels, c, (0.7, 0.3)).numpy(), expected.numpy())


def test_clap_multipliers_are_the_zero_shot_probability_of_the_true_class():
    from crossgate.methods.clap import clap_multipliers

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 1])
    p = logits.softmax(1)
    np.testing.assert_allclose(clap_multipliers(logits, y, 2).numpy(),
                               [p[0, 0].item(), (p[1, 1].item() + p[2, 1].item()) / 2], rtol=1e-6)


def test_lpp_step_sizes_are_the_papers_closed_forms():
    from crossgate.methods.lpp import lpp_step_sizes

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(12, 6)))
    t = torch.from_numpy(rng.normal(size=(3, 6)))
    lr_w, lr_alpha = lpp_step_sizes(x, t)
    assert lr_w == pytest.approx(4 * 12 / np.linalg.eigvalsh(x.numpy().T @ x.numpy()).max())
    assert lr_alpha == pytest.approx(12 / (4 * ((x.numpy() @ t.numpy().T) ** 2).sum(0).max()))


def test_lpp_initial_alpha_is_the_authors_calculate_init_alpha():
    """Their code: compute_centroids_alpha(x Tᵀ, y) keeps each image's own-class cosine and averages it per
    class; α₀ = mean over classes of 250/shots · shots · that. Here by a loop over classes."""
    from crossgate.methods.lpp import LPPConfig

    x, y, text = blobs()
    xu = x / np.linalg.norm(x, axis=1, keepdims=True)
    t = text.class_means()
    own = [np.mean([xu[i] @ t[c] for i in range(len(y)) if y[i] == c]) for c in range(t.shape[0])]
    clf = create_method("lpp", config=LPPConfig(epochs=1, alpha_every=1000), random_state=0).fit(x, y, text=text)
    np.testing.assert_allclose(clf.alpha_, np.full(t.shape[0], 250 * np.mean(own)), rtol=1e-5)
    table = create_method("lpp", config=LPPConfig(epochs=1, alpha_every=1000, alpha_init="all-classes"),
                          random_state=0).fit(x, y, text=text)
    np.testing.assert_allclose(table.alpha_, np.full(t.shape[0], 250 * np.mean(xu @ t.T)), rtol=1e-5)
