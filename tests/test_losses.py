import math

import pytest
import torch
import torch.nn.functional as F

from losses import FeatureMatching, LeveledKDConfig, LeveledKDLoss, cross_entropy, kd_loss, kl_divergence, soft_targets


def logits_of(probs):
    return torch.log(torch.tensor([probs], dtype=torch.float64))


def test_kl_worked_example():
    p_t = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
    z_s = logits_of([0.5, 0.4, 0.1])
    assert kl_divergence(z_s, p_t, temperature=1.0).item() == pytest.approx(0.0969, abs=1e-4)
    # and against the definition
    expected = sum(p * math.log(p / q) for p, q in zip([0.7, 0.2, 0.1], [0.5, 0.4, 0.1]))
    assert kl_divergence(z_s, p_t, 1.0).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
def test_kd_gradient_is_q_minus_p_over_t(temperature):
    torch.manual_seed(0)
    n, c = 5, 7
    z_s = torch.randn(n, c, dtype=torch.float64, requires_grad=True)
    z_t = torch.randn(n, c, dtype=torch.float64)
    p = F.softmax(z_t / temperature, dim=1)
    kl_divergence(z_s, p, temperature).backward()
    q = F.softmax(z_s.detach() / temperature, dim=1)
    # per sample (1/T)(q - p); "batchmean" divides by the batch size
    torch.testing.assert_close(z_s.grad, (q - p) / temperature / n)


def test_kd_gradient_high_temperature_limit():
    torch.manual_seed(1)
    c, T = 10, 20.0
    z = torch.randn(1, c, dtype=torch.float64)
    v = torch.randn(1, c, dtype=torch.float64)
    z, v = z - z.mean(), v - v.mean()  # zero-mean logits
    z.requires_grad_(True)
    kl_divergence(z, F.softmax(v / T, dim=1), T).backward()
    approx = (z.detach() - v) / (c * T**2)
    torch.testing.assert_close(z.grad, approx, rtol=0.1, atol=1e-5)
    assert not torch.allclose(z.grad, torch.zeros_like(z.grad))


def test_t_squared_keeps_gradient_scale():
    torch.manual_seed(2)
    z_t, z_s0 = torch.randn(64, 10) * 3, torch.randn(64, 10) * 3
    norms = []
    for T in (2.0, 5.0, 10.0, 20.0):
        z_s = z_s0.clone().requires_grad_(True)
        kd_loss(z_s, soft_targets([z_t], T), T).backward()
        norms.append(z_s.grad.norm().item())
    assert max(norms) / min(norms) < 3.0
    # without T^2 the scale would shrink by about (20/2)^2 = 100
    z_s = z_s0.clone().requires_grad_(True)
    kl_divergence(z_s, soft_targets([z_t], 20.0), 20.0).backward()
    assert z_s.grad.norm().item() < norms[-1] / 100


def _student(n=8, c=10, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, requires_grad=True)
    feats = torch.randn(n, d, generator=g, requires_grad=True)
    return logits, feats, torch.randint(0, c, (n,), generator=g)


def test_alpha_one_is_plain_ce():
    logits, feats, y = _student()
    teacher = [torch.randn(8, 10)]
    loss = LeveledKDLoss(LeveledKDConfig(alpha=1.0, s_kl=1.0, s_fm=1.0), 16, [16])
    out = loss((logits, feats), y, teacher, [torch.randn(8, 16)])
    torch.testing.assert_close(out["total"], F.cross_entropy(logits, y))


def test_no_kd_scales_are_alpha_times_ce():
    logits, feats, y = _student()
    loss = LeveledKDLoss(LeveledKDConfig(alpha=0.3, s_kl=0.0, s_fm=0.0), 16, [16])
    out = loss((logits, feats), y, [torch.randn(8, 10)], [torch.randn(8, 16)])
    torch.testing.assert_close(out["total"], 0.3 * F.cross_entropy(logits, y))
    assert LeveledKDConfig(alpha=0.3, s_kl=0.0, s_fm=0.0).variant == "no_kd"


def test_leveled_sum_of_parts_and_variants():
    logits, feats, y = _student()
    t_logits, t_feats = torch.randn(8, 10), torch.randn(8, 32)
    cfg = LeveledKDConfig(alpha=0.4, temperature=3.0, s_kl=0.7, s_fm=2.0)
    loss = LeveledKDLoss(cfg, 16, [32])
    out = loss((logits, feats), y, [t_logits], [t_feats])
    expected = 0.4 * out["ce"] + 0.6 * (0.7 * out["kl"] + 2.0 * out["fm"])
    torch.testing.assert_close(out["total"], expected)
    assert out["kl"] > 0 and out["fm"] > 0
    assert cfg.variant == "type_2"
    assert LeveledKDConfig(s_kl=0.0, s_fm=1.0).variant == "type_1"
    assert LeveledKDConfig(s_kl=1.0, s_fm=0.0).variant == "normal_kd"


def test_label_smoothing_changes_ce():
    logits, _, y = _student()
    assert cross_entropy(logits, y, 0.1) != cross_entropy(logits, y, 0.0)
    with pytest.raises(ValueError):
        cross_entropy(logits, y, 1.5)


def test_feature_matching_gradients_reach_projector_and_student_not_teacher():
    fm = FeatureMatching(16, 32)
    student = torch.randn(8, 16, requires_grad=True)
    teacher = torch.randn(8, 32, requires_grad=True)
    fm(student, teacher).backward()
    assert fm.projector.weight.grad is not None and fm.projector.weight.grad.abs().sum() > 0
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    assert isinstance(FeatureMatching(16, 16).projector, torch.nn.Identity)


def test_kd_teacher_is_detached():
    z_s = torch.randn(4, 10, requires_grad=True)
    z_t = torch.randn(4, 10, requires_grad=True)
    kd_loss(z_s, soft_targets([z_t], 4.0), 4.0).backward()
    assert z_t.grad is None and z_s.grad is not None


def test_multi_teacher_soft_targets_are_weighted_average():
    a, b = torch.randn(4, 10), torch.randn(4, 10)
    mixed = soft_targets([a, b], 2.0, [3.0, 1.0])
    torch.testing.assert_close(mixed, 0.75 * F.softmax(a / 2, 1) + 0.25 * F.softmax(b / 2, 1))
    torch.testing.assert_close(soft_targets([a, b], 2.0), 0.5 * F.softmax(a / 2, 1) + 0.5 * F.softmax(b / 2, 1))
    with pytest.raises(ValueError):
        soft_targets([a, b], 2.0, [1.0])


def test_multi_teacher_one_fm_term_per_teacher():
    logits, feats, y = _student()
    loss = LeveledKDLoss(LeveledKDConfig(alpha=0.0, s_kl=0.0, s_fm=1.0), 16, [32, 64], [1.0, 1.0])
    matchers = loss.terms["fm"].matchers
    assert len(matchers) == 2
    t1, t2 = torch.randn(8, 32), torch.randn(8, 64)
    out = loss((logits, feats), y, [torch.randn(8, 10)] * 2, [t1, t2])
    expected = 0.5 * matchers[0](feats, t1) + 0.5 * matchers[1](feats, t2)
    torch.testing.assert_close(out["fm"], expected.detach())


@pytest.mark.parametrize("kwargs", [dict(alpha=1.5), dict(temperature=0.0), dict(s_kl=-1.0)])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        LeveledKDConfig(**kwargs)


# The poster's terms as registered KD terms: the numbers of the loss before the registry
# (commit 29a9e81, losses/leveled.py computing s_kl*KD + s_fm*FM by hand), pinned. Inputs and
# projector initialisation are seeded; the values were printed by that commit's code.
PINNED = [
    (dict(alpha=0.4, temperature=3.0, s_kl=0.7, s_fm=2.0), 1, None,
     {"total": 2.6825101375579834, "ce": 2.8788259029388428, "kl": 1.0882354974746704, "fm": 0.8949339985847473}),
    (dict(alpha=0.5, temperature=4.0, s_kl=1.0, s_fm=0.0), 1, None,
     {"total": 2.122215747833252, "ce": 3.241806983947754, "kl": 1.002624273300171, "fm": 0.0}),
    (dict(alpha=0.0, temperature=4.0, s_kl=0.0, s_fm=1.0), 2, [0.3, 0.7],
     {"total": 0.8776447772979736, "ce": 3.0672829151153564, "kl": 0.0, "fm": 0.8776447772979736}),
    (dict(alpha=0.2, temperature=8.0, s_kl=2.0, s_fm=0.5, label_smoothing=0.1), 2, [1.0, 3.0],
     {"total": 2.02156662940979, "ce": 2.821477174758911, "kl": 0.6777544021606445, "fm": 0.9321603775024414}),
]


@pytest.mark.parametrize("case", range(len(PINNED)))
def test_registered_kl_and_fm_give_the_numbers_of_the_loss_before_the_registry(case):
    kwargs, teachers, weights, expected = PINNED[case]
    g = torch.Generator().manual_seed(case)
    z, f = torch.randn(8, 10, generator=g), torch.randn(8, 16, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    t_logits = [torch.randn(8, 10, generator=g) for _ in range(teachers)]
    t_feats = [torch.randn(8, 32, generator=g) for _ in range(teachers)]
    torch.manual_seed(123)  # the projectors' initialisation
    out = LeveledKDLoss(LeveledKDConfig(**kwargs), 16, [32] * teachers, weights)((z, f), y, t_logits, t_feats)
    for key, value in expected.items():
        assert float(out[key].detach()) == pytest.approx(value, rel=1e-6, abs=1e-7), key


def test_registry_lists_the_poster_terms_first_and_rejects_bad_registrations():
    from losses import HyperParam, KDTerm, kd_terms, register_kd_term

    names = list(kd_terms())
    assert names[:2] == ["kl", "fm"]
    assert kd_terms()["kl"].needs == {"logits"} and kd_terms()["fm"].needs == {"features"}

    class Clash(KDTerm):
        name, needs = "clash", frozenset({"logits"})
        hyperparams = (HyperParam("temperature", 2.0, 0.0, 10.0),)  # same key, other meaning

    with pytest.raises(ValueError, match="differs"):
        register_kd_term(Clash)
    Clash.name, Clash.hyperparams = "kl", ()
    with pytest.raises(ValueError, match="twice"):
        register_kd_term(Clash)
    assert list(kd_terms()) == names  # nothing was added


def test_variant_names_other_methods_by_their_terms():
    from losses import kd_terms

    other = [n for n in kd_terms() if n not in ("kl", "fm")]
    for name in other:
        assert LeveledKDConfig(scales={"kl": 0.0, name: 1.0}).variant == name
        assert LeveledKDConfig(scales={"kl": 0.0, "fm": 1.0, name: 1.0}).variant == f"fm+{name}"
    assert LeveledKDConfig(alpha=1.0, scales={n: 1.0 for n in kd_terms()}).variant == "no_kd"
    with pytest.raises(ValueError, match="unknown KD term"):
        LeveledKDConfig(scales={"nope": 1.0})
