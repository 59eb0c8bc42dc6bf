import pytest
import torch

from models import build_model, model_names

EXPECTED_FEATURES = {"cnn_1": 256, "cnn_2": 128, "cnn_1_maxpool": 256, "mlp_1": 100, "mlp_2": 128, "inn_1": 256}


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
    from study.train.data import translate

    torch.manual_seed(0)
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 10:18, 10:18] = torch.rand(8, 1, 8, 8)
    moved = translate(x, 2, 0)
    def change(name):
        model = build_model(name, (1, 28, 28), 10).eval()
        a, b = model(x).features, model(moved).features
        return ((a - b).norm() / a.norm()).item()
    assert change("cnn_1") < change("mlp_1")


def test_the_max_pooling_teacher_is_more_shift_invariant_than_cnn_1():
    """Same widths, same weights' shapes; max pooling instead of strides: its features move less under
    2 px shifts (untrained, eval, averaged over inits and both axes)."""
    from study.train.data import translate

    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 8:20, 8:20] = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(1))

    def change(name: str) -> float:
        total = 0.0
        for seed in range(3):
            torch.manual_seed(seed)
            model = build_model(name, (1, 28, 28), 10).eval()
            base = model(x).features
            for dx, dy in ((2, 0), (0, 2), (-2, 0), (0, -2)):
                total += ((base - model(translate(x, dx, dy)).features).norm() / base.norm()).item()
        return total
    plain, pooled = build_model("cnn_1", (1, 28, 28), 10), build_model("cnn_1_maxpool", (1, 28, 28), 10)
    assert [m.out_channels for m in pooled.modules() if isinstance(m, torch.nn.Conv2d)] == [32, 64, 128, 256]
    assert sum(p.numel() for p in pooled.parameters()) == sum(p.numel() for p in plain.parameters())
    assert change("cnn_1_maxpool") < change("cnn_1")


def test_registry_errors_name_valid_choices():
    with pytest.raises(ValueError) as info:
        build_model("resnet", (1, 28, 28), 10)
    for name in model_names():
        assert name in str(info.value)
    with pytest.raises(ValueError):
        build_model("mlp_1", (28, 28), 10)


# --- vit_1: the small ViT student of the CiT setting (convolution + involution teachers -> ViT) ---

@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["mnist", "cifar10"])
def test_vit_outputs_logits_and_features(shape):
    model = build_model("vit_1", shape, 10)
    logits, features = model(torch.randn(4, *shape))
    assert logits.shape == (4, 10)
    assert features.shape == (4, 64)
    assert model.feature_dim == 64
    patches = (shape[1] // 4) * (shape[2] // 4)
    assert model.pos_embed.shape == (1, 1 + patches, 64)  # 49 patches on MNIST, 64 on CIFAR-10, + class token


def test_vit_is_a_student_only():
    assert "vit_1" in model_names("student")
    assert "vit_1" not in model_names("teacher")


def test_vit_pads_sides_not_divisible_by_the_patch():
    """30x26 -> a 8x7 token grid; the padded last row/column of pixels still reaches the output."""
    torch.manual_seed(0)
    model = build_model("vit_1", (1, 30, 26), 10).eval()
    assert model.pos_embed.shape == (1, 1 + 8 * 7, 64)
    x = torch.randn(2, 1, 30, 26, requires_grad=True)
    logits, features = model(x)
    assert logits.shape == (2, 10) and features.shape == (2, 64)
    features.sum().backward()
    assert x.grad[:, :, -1, :].abs().sum() > 0 and x.grad[:, :, :, -1].abs().sum() > 0


def test_vit_trains_on_a_separable_problem():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    y = torch.randint(0, 2, (64,))
    x = torch.randn(64, 1, 28, 28) * 0.3
    x[y == 1, :, :14] += 1.0  # class 1: bright top half
    model = build_model("vit_1", (1, 28, 28), 2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.eval()
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(model(x).logits, y).item()
    model.train()
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x).logits, y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(model(x).logits, y).item()
    assert after < 0.5 * before


def test_vit_with_memory_format_and_export():
    """What the trainer and the MLflow export do to a student: memory format, then LogitsOnly (flat input), pickle."""
    import pickle

    from models.export import logits_only
    from study.train.runtime import apply_memory_format

    torch.manual_seed(0)
    model = apply_memory_format(build_model("vit_1", (1, 28, 28), 10))
    x = torch.randn(3, 1, 28, 28)
    logits, features = model(x)
    assert logits.shape == (3, 10) and features.shape == (3, 64)
    wrapped = logits_only(model, (1, 28, 28))
    with torch.no_grad():
        expected = wrapped(x)
        assert expected.shape == (3, 10)
        assert torch.allclose(wrapped(x.flatten(1)), expected)
        assert torch.allclose(pickle.loads(pickle.dumps(wrapped))(x), expected, atol=1e-6)
