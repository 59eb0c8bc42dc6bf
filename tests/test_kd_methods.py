"""DKD, DIST and RKD (losses/dkd.py, dist.py, rkd.py): the math against independent hand
computations (plain Python / numpy loops), their properties, and how the leveled loss builds them."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from losses import HyperParam, LeveledKDConfig, LeveledKDLoss, kd_loss, kd_terms
from losses.dist import DISTTerm
from losses.dkd import DKDTerm
from losses.kd import TEMPERATURE
from losses.rkd import RKDTerm

TERMS = {"dkd": DKDTerm, "dist": DISTTerm, "rkd": RKDTerm}


def softmax(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def huber(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def call(term, s_logits, s_feats, t_logits, t_feats, targets=None):
    """Call a term as LeveledKDLoss does (``targets=`` only for terms that read them)."""
    extra = {"targets": targets} if term.needs_targets else {}
    return term(s_logits, s_feats, t_logits, t_feats, **extra)


def random_batch(n=8, c=10, d_s=100, d_t=256, teachers=1, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    s_logits = (torch.randn(n, c, generator=g) * 2).to(dtype).requires_grad_(True)
    s_feats = torch.randn(n, d_s, generator=g).to(dtype).requires_grad_(True)
    t_logits = [torch.randn(n, c, generator=g) * 3 for _ in range(teachers)]
    t_feats = [torch.randn(n, d_t, generator=g).relu() for _ in range(teachers)]
    return s_logits, s_feats, t_logits, t_feats, torch.randint(0, c, (n,), generator=g)


# ---------------------------------------------------------------- hand-computed cases

def test_dkd_hand_computed():
    z_s = [[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]]
    z_t = [[3.0, 0.0, -1.0], [0.0, 1.0, 1.5]]
    y, T, alpha, beta = [0, 2], 2.0, 0.5, 3.0
    expected = 0.0
    for zs, zt, target in zip(z_s, z_t, y):
        ps, pt = softmax(zs, T), softmax(zt, T)
        bs, bt = [ps[target], 1 - ps[target]], [pt[target], 1 - pt[target]]
        tckd = sum(q * math.log(q / r) for q, r in zip(bt, bs))
        others = [k for k in range(3) if k != target]
        qs = softmax([zs[k] for k in others], T)  # softmax over the non-target classes alone
        qt = softmax([zt[k] for k in others], T)
        nckd = sum(q * math.log(q / r) for q, r in zip(qt, qs))
        expected += (alpha * tckd + beta * nckd) * T**2 / len(y)
    term = DKDTerm({"temperature": T, "dkd_alpha": alpha, "dkd_beta": beta}, 2, [2], [1.0])
    got = term(torch.tensor(z_s, dtype=torch.float64), None, [torch.tensor(z_t, dtype=torch.float64)], [],
               targets=torch.tensor(y))
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_dkd_decomposes_classic_kd():
    # Zhao et al. eq. (1): KD = TCKD + (1 - p_t^target) NCKD, per sample
    torch.manual_seed(3)
    z_s, z_t, T = torch.randn(1, 6, dtype=torch.float64), torch.randn(1, 6, dtype=torch.float64) * 2, 3.0
    y = torch.tensor([4])
    p_t = F.softmax(z_t / T, dim=1)
    term = DKDTerm({"temperature": T, "dkd_alpha": 1.0, "dkd_beta": 1 - p_t[0, 4].item()}, 6, [6], [1.0])
    assert term(z_s, None, [z_t], [], targets=y).item() == pytest.approx(kd_loss(z_s, p_t, T).item(), rel=1e-10)


def test_dist_hand_computed():
    z_s = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [0.0, 0.5, 0.1]])
    z_t = np.array([[3.0, 0.0, -1.0], [0.0, 1.0, 1.5], [2.0, 2.5, -0.5]])
    tau, beta, gamma = 2.0, 0.7, 1.9
    p_s = np.array([softmax(row, tau) for row in z_s])
    p_t = np.array([softmax(row, tau) for row in z_t])
    inter = 1 - np.mean([np.corrcoef(p_s[i], p_t[i])[0, 1] for i in range(3)])
    intra = 1 - np.mean([np.corrcoef(p_s[:, j], p_t[:, j])[0, 1] for j in range(3)])
    expected = tau**2 * (beta * inter + gamma * intra)
    term = DISTTerm({"dist_tau": tau, "dist_beta": beta, "dist_gamma": gamma}, 2, [2], [1.0])
    got = term(torch.tensor(z_s), None, [torch.tensor(z_t)], [])
    assert got.item() == pytest.approx(expected, rel=1e-6)  # the reference's 1e-8 in the denominator


def test_rkd_hand_computed():
    f_s = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]  # collinear: cos = -1 at the middle point
    f_t = [[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 0.1, 0.0]]  # another width: no projector needed
    n = 3

    def distances(x):
        d = [[math.dist(x[i], x[j]) for j in range(n)] for i in range(n)]
        mean = sum(d[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        return [[d[i][j] / mean for j in range(n)] for i in range(n)]

    def angles(x):  # entry (j, i, k): the angle at x_j between x_i and x_k
        out = {}
        for j in range(n):
            for i in range(n):
                for k in range(n):
                    if i == j or k == j:
                        out[j, i, k] = 0.0
                        continue
                    u = [a - b for a, b in zip(x[i], x[j])]
                    v = [a - b for a, b in zip(x[k], x[j])]
                    out[j, i, k] = sum(a * b for a, b in zip(u, v)) / (math.hypot(*u) * math.hypot(*v))
        return out

    ds, dt = distances(f_s), distances(f_t)
    a_s, a_t = angles(f_s), angles(f_t)
    loss_d = sum(huber(ds[i][j], dt[i][j]) for i in range(n) for j in range(n)) / n**2
    loss_a = sum(huber(a_s[key], a_t[key]) for key in a_s) / n**3
    # both branches of the Huber loss are exercised
    assert max(abs(a_s[k] - a_t[k]) for k in a_s) > 1 and abs(ds[0][2] - dt[0][2]) > 1
    w_d, w_a = 2.0, 3.0
    term = RKDTerm({"rkd_distance": w_d, "rkd_angle": w_a}, 2, [3], [1.0])
    got = term(None, torch.tensor(f_s, dtype=torch.float64), [], [torch.tensor(f_t, dtype=torch.float64)])
    assert got.item() == pytest.approx(w_d * loss_d + w_a * loss_a, rel=1e-9)
    only_d = RKDTerm({"rkd_distance": 1.0, "rkd_angle": 0.0}, 2, [3], [1.0])
    assert only_d(None, torch.tensor(f_s), [], [torch.tensor(f_t)]).item() == pytest.approx(loss_d, rel=1e-5)


# ---------------------------------------------------------------- properties

@pytest.mark.parametrize("name", TERMS)
def test_zero_when_student_is_teacher(name):
    _, _, t_logits, t_feats, y = random_batch(d_s=32, d_t=32)
    term = TERMS[name]({}, 32, [32], [1.0])
    got = call(term, t_logits[0].clone(), t_feats[0].clone(), t_logits, t_feats, y)
    assert got.item() == pytest.approx(0.0, abs=1e-6)


def test_rkd_zero_for_scaled_and_padded_teacher_features():
    # relations ignore scale and width: 2 * f_t padded with zeros to the student's width gives 0
    _, _, _, t_feats, _ = random_batch(d_t=24)
    student = torch.cat([2 * t_feats[0], torch.zeros(8, 76)], dim=1)
    assert RKDTerm({}, 100, [24], [1.0])(None, student, [], t_feats).item() == pytest.approx(0.0, abs=1e-5)
    assert RKDTerm({}, 100, [24], [1.0])(None, torch.randn(8, 100), [], t_feats).item() > 0.1


def test_dist_zero_for_affine_related_probabilities():
    # p_s = p_t / 2 + 1/(2C) is a positive affine map of p_t, row- and column-wise: DIST ~0, KL is not
    _, _, t_logits, _, _ = random_batch()
    p_t = F.softmax(t_logits[0], dim=1)
    z_s = torch.log(0.5 * p_t + 0.5 / p_t.shape[1])
    # not exactly 0: the reference's 1e-8 in the denominator weighs on a class whose probability
    # hardly varies over the batch (norms' product ~4e-5 here)
    assert DISTTerm({}, 1, [1], [1.0])(z_s, None, t_logits, []).item() == pytest.approx(0.0, abs=1e-4)
    assert kd_loss(z_s, p_t, 1.0).item() > 0.05


@pytest.mark.parametrize("name", TERMS)
def test_gradients_reach_the_student_only(name):
    s_logits, s_feats, t_logits, t_feats, y = random_batch()
    t_logits = [t.requires_grad_(True) for t in t_logits]
    t_feats = [t.requires_grad_(True) for t in t_feats]
    term = TERMS[name]({}, 100, [256], [1.0])
    call(term, s_logits, s_feats, t_logits, t_feats, y).backward()
    grad = s_logits.grad if "logits" in term.needs else s_feats.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert t_logits[0].grad is None and t_feats[0].grad is None


@pytest.mark.parametrize("name", TERMS)
def test_finite_for_bf16_student(name):
    s_logits, s_feats, t_logits, t_feats, y = random_batch(dtype=torch.bfloat16)
    got = call(TERMS[name]({}, 100, [256], [1.0]), s_logits, s_feats, t_logits, t_feats, y)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    got.backward()
    assert torch.isfinite(s_logits.grad if "logits" in TERMS[name].needs else s_feats.grad).all()


@pytest.mark.parametrize("name", TERMS)
def test_two_teachers_are_weighted(name):
    s_logits, s_feats, t_logits, t_feats, y = random_batch(teachers=2)
    both = call(TERMS[name]({}, 100, [256, 256], [0.25, 0.75]), s_logits, s_feats, t_logits, t_feats, y)
    one = [call(TERMS[name]({}, 100, [256], [1.0]), s_logits, s_feats, [t_logits[i]], [t_feats[i]], y)
           for i in range(2)]
    torch.testing.assert_close(both, 0.25 * one[0] + 0.75 * one[1])


def test_rkd_batch_of_one_is_zero_with_a_graph():
    f = torch.randn(1, 100, requires_grad=True)
    got = RKDTerm({}, 100, [256], [1.0])(None, f, [], [torch.randn(1, 256)])
    assert got.item() == 0.0
    got.backward()


def test_dkd_needs_targets():
    s_logits, s_feats, t_logits, t_feats, _ = random_batch()
    term = DKDTerm({}, 100, [256], [1.0])
    with pytest.raises(ValueError, match="targets"):
        term(s_logits, s_feats, t_logits, t_feats)
    with pytest.raises(ValueError, match="teachers"):  # two teachers' logits, one weight
        term(s_logits, s_feats, t_logits + t_logits, t_feats, targets=torch.zeros(8, dtype=torch.long))


# ---------------------------------------------------------------- registry and build

def test_registered_with_needs_and_hyperparams():
    terms = kd_terms()
    assert list(terms)[:5] == ["kl", "fm", "dkd", "dist", "rkd"]
    assert {n: set(terms[n].needs) for n in TERMS} == {"dkd": {"logits"}, "dist": {"logits"}, "rkd": {"features"}}
    assert [terms[n].needs_targets for n in TERMS] == [True, False, False]
    assert DKDTerm.hyperparams[0] is TEMPERATURE
    defaults = {hp.name: (hp.default, hp.low, hp.high, hp.low_open) for n in TERMS for hp in terms[n].hyperparams}
    assert defaults == {"temperature": (4.0, 0.0, 100.0, True), "dkd_alpha": (1.0, 0.0, 10.0, False),
                        "dkd_beta": (8.0, 0.0, 100.0, False), "dist_beta": (1.0, 0.0, 10.0, False),
                        "dist_gamma": (1.0, 0.0, 10.0, False), "dist_tau": (1.0, 0.0, 100.0, True),
                        "rkd_distance": (25.0, 0.0, 1000.0, False), "rkd_angle": (50.0, 0.0, 1000.0, False)}
    for n in TERMS:
        assert terms[n].summary and "\n" not in terms[n].summary
        assert all(isinstance(hp, HyperParam) for hp in terms[n].hyperparams)


@pytest.mark.parametrize("name", TERMS)
def test_build_like_the_leveled_loss(name):
    term = kd_terms()[name](hparams={}, student_dim=100, teacher_dims=[256], weights=[1.0])
    assert not list(term.parameters())  # none of the three learns anything
    s_logits, s_feats, t_logits, t_feats, y = random_batch()
    got = call(term, s_logits, s_feats, t_logits, t_feats, y)
    assert got.shape == () and torch.isfinite(got) and got.item() > 0


def test_hparams_are_read():
    s_logits, s_feats, t_logits, t_feats, y = random_batch()
    base = DKDTerm({}, 100, [256], [1.0])(s_logits, s_feats, t_logits, t_feats, targets=y)
    tckd_only = DKDTerm({"dkd_beta": 0.0}, 100, [256], [1.0])(s_logits, s_feats, t_logits, t_feats, targets=y)
    nckd_only = DKDTerm({"dkd_alpha": 0.0}, 100, [256], [1.0])(s_logits, s_feats, t_logits, t_feats, targets=y)
    torch.testing.assert_close(base, tckd_only + nckd_only)


def test_in_the_leveled_loss():
    s_logits, s_feats, t_logits, t_feats, y = random_batch(teachers=2)
    config = LeveledKDConfig(alpha=0.3, s_kl=0.0, s_dkd=1.0, s_dist=2.0, s_rkd=0.5, dkd_beta=4.0)
    loss = LeveledKDLoss(config, 100, [256, 256], [1.0, 3.0])
    out = loss((s_logits, s_feats), y, t_logits, t_feats)
    kd = sum(config.scales[n] * call(TERMS[n](config.hparams, 100, [256, 256], [0.25, 0.75]),
                                     s_logits, s_feats, t_logits, t_feats, y) for n in TERMS)
    torch.testing.assert_close(out["total"], 0.3 * F.cross_entropy(s_logits, y) + 0.7 * kd)
    out["total"].backward()
    assert torch.isfinite(s_feats.grad).all() and s_feats.grad.abs().sum() > 0
