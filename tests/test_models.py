import pytest
import torch

from models import build_model, model_names

EXPECTED_FEATURES = {"cnn_1": 256, "cnn_2": 128, "mlp_1": 100, "mlp_2": 128, "inn_1": 256}


@pytest.mark.parametrize("name", sorted(EXPECTED_FEATURES))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["mnist", "cifar10"])
def test_outputs_logits_and_features(name, shape):
    model = build_model(name, shape, 10)
    logits, features = model(torch.randn(4, *shape))
    assert logits.shape == (4, 10)
    assert features.shape == (4, EXPECTED_FEATURES[name])
    assert model.feature_dim == EXPECTED_FEATURES[name]


def test_seed_architectures_exactly():
    cnn1 = build_model("cnn_1", (1, 28, 28), 10)
    convs = [m for m in cnn1.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in cnn1.modules()) == 4
    cnn2 = build_model("cnn_2", (3, 32, 32), 10)
    assert [m.out_channels for m in cnn2.modules() if isinstance(m, torch.nn.Conv2d)] == [64, 64, 128, 128]
    mlp1 = build_model("mlp_1", (1, 28, 28), 10)
    linears = [m for m in mlp1.modules() if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(784, 2000), (2000, 1000), (1000, 100), (100, 10)]
    mlp2 = build_model("mlp_2", (3, 32, 32), 10)
    assert [l.out_features for l in mlp2.modules() if isinstance(l, torch.nn.Linear)] == [1024, 512, 256, 128, 10]
    drops = [m.p for m in mlp2.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(p == 0.3 for p in drops)


def test_cnn_is_nearly_shift_invariant_compared_with_mlp():
    """GAP gives the CNN its bias: its features move less under a shift than an MLP's (untrained, eval)."""
    from study.data import translate

    torch.manual_seed(0)
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 10:18, 10:18] = torch.rand(8, 1, 8, 8)
    moved = translate(x, 2, 0)
    def change(name):
        model = build_model(name, (1, 28, 28), 10).eval()
        a, b = model(x).features, model(moved).features
        return ((a - b).norm() / a.norm()).item()
    assert change("cnn_1") < change("mlp_1")


def test_registry_errors_name_valid_choices():
    with pytest.raises(ValueError) as info:
        build_model("resnet", (1, 28, 28), 10)
    for name in model_names():
        assert name in str(info.value)
    with pytest.raises(ValueError):
        build_model("mlp_1", (28, 28), 10)
