"""Models as plug-ins, checked before any training (study/train/model_check.py): a registered class
or factory, a logits-only model adapted to return its features, torchvision's models; a model that
breaks the (logits, features) contract is one line that says how to fix it."""
from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from models import build_model, register_model
from models.registry import unregister_model
from study.train.model_check import ModelError, check_model


@pytest.fixture
def names():
    """Registers under the given names, unregisters afterwards."""
    taken: list[str] = []
    yield taken
    for name in taken:
        unregister_model(name)


class Plain(nn.Module):
    """A classifier written elsewhere: its forward returns logits only."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), 12), nn.ReLU())
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


def test_a_logits_only_model_is_adapted_and_keeps_its_state_dict_keys(names):
    names.append("lkd_plain")
    register_model("lkd_plain", roles=("teacher", "student"), outputs="logits")(Plain)
    model = build_model("lkd_plain", (1, 6, 6), 4)
    out = model(torch.zeros(3, 1, 6, 6))
    assert out.logits.shape == (3, 4) and out.features.shape == (3, 12) and model.feature_dim == 12
    assert set(model.state_dict()) == set(Plain((1, 6, 6), 4).state_dict())  # a plain checkpoint loads
    clone = pickle.loads(pickle.dumps(model))  # MLflow pickles it
    assert torch.equal(clone(torch.ones(2, 1, 6, 6)).features, model(torch.ones(2, 1, 6, 6)).features)
    assert check_model("lkd_plain", (1, 6, 6), 4, "student") == 12


def test_a_factory_function_registers_like_a_class(names):
    names.append("lkd_factory")

    @register_model("lkd_factory", roles=("student",), outputs="logits", features="body")
    def build(input_shape, num_classes):
        return Plain(input_shape, num_classes)

    assert check_model("lkd_factory", (3, 4, 4), 5, "student") == 12


def test_torchvision_models_register_by_name(names):
    from models.hub import register_torchvision_model

    names.append(register_torchvision_model("lkd_resnet18", "resnet18"))
    assert check_model("lkd_resnet18", (1, 28, 28), 10, "teacher") == 512  # grayscale repeated to RGB


def test_timm_is_optional(names):
    from models.hub import register_timm_model

    names.append(register_timm_model("lkd_timm", "resnet18"))
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="needs timm, which is not installed: pip install timm"):
            check_model("lkd_timm", (3, 32, 32), 10)
    else:
        assert check_model("lkd_timm", (3, 32, 32), 10) > 0


class Tensor(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1)[:, :4])


class WrongClasses(Tensor):
    def forward(self, x):
        return self.fc(x.flatten(1)[:, :4])[:, :1], x.flatten(1)[:, :4]


class NoFeatureDim(Tensor):
    def forward(self, x):
        return self.fc(x.flatten(1)[:, :4]), x.flatten(1)[:, :4]


class Crashes(Tensor):
    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("cls, message", [
    (Tensor, "returns one tensor; its forward must return (logits, features), or register it with outputs='logits'"),
    (WrongClasses, r"logits of shape \[2, 1\] for 2 images; expected \[2, 3\] \(the dataset has 3 classes\)"),
    (NoFeatureDim, "feature_dim is None but its features have 4 values; set self.feature_dim = 4"),
    (Crashes, r"fails on images of the dataset \(1x5x5\): RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
], ids=["one-tensor", "wrong-classes", "no-feature-dim", "crashes"])
def test_a_model_that_breaks_the_contract_is_one_line(cls, message, names):
    names.append("lkd_broken")
    register_model("lkd_broken")(cls)
    with pytest.raises(ModelError, match="model 'lkd_broken'") as error:
        check_model("lkd_broken", (1, 5, 5), 3)
    assert message in str(error.value) or __import__("re").search(message, str(error.value)), str(error.value)


def test_roles_are_checked(names):
    with pytest.raises(ModelError, match=r"model 'cnn_1' cannot be a student \(its roles: teacher\)"):
        check_model("cnn_1", (1, 28, 28), 10, "student")


def test_models_by_name_torchvision_and_module_class(names, tmp_path, monkeypatch):
    from study.distill.config import validate_run

    names += ["torchvision:resnet18", "lkd_models_pkg:Plainer", "lkd_models_pkg:nope"]
    run = validate_run({"teachers": "torchvision:resnet18", "step_torchvision:resnet18": 50})
    assert run.teachers == "torchvision:resnet18" and getattr(run, "step_torchvision:resnet18") == 50
    (tmp_path / "lkd_models_pkg.py").write_text(
        "from torch import nn\n"
        "class Plainer(nn.Module):\n"
        "    def __init__(self, shape, classes):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], 6), nn.ReLU())\n"
        "        self.fc = nn.Linear(6, classes)\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.body(x))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert check_model("lkd_models_pkg:Plainer", (1, 5, 5), 3, "student") == 6  # returns logits: adapted
    from study.distill.config import ConfigError

    with pytest.raises(ConfigError, match="module 'lkd_models_pkg' has no class or function 'nope'"):
        validate_run({"student": "lkd_models_pkg:nope"})


def test_a_named_feature_layer_is_taken_by_a_hook_and_pooled(names):
    from models.hub import register_model_spec

    names.append(register_model_spec("lkd_r18_layer3", "torchvision:resnet18", features="layer3"))
    assert check_model("lkd_r18_layer3", (3, 32, 32), 10) == 256  # layer3's map, average-pooled
    names.append(register_model_spec("lkd_r18_nolayer", "torchvision:resnet18", features="layer9"))
    with pytest.raises(ModelError, match="has no layer 'layer9' to take features from"):
        check_model("lkd_r18_nolayer", (3, 32, 32), 10)


def test_an_unpickled_adapted_model_adapts_again_in_a_fresh_process(names, monkeypatch):
    """A logged student (a logits-only wrapper around an adapted model), loaded in another process, is
    adapted again as a pretrained teacher: its old hooks keep their ids, the new ones must not take them."""
    from torch.utils import hooks

    from models.adapters import as_model_output
    from models.export import logits_only

    names.append("lkd_plain_again")
    register_model("lkd_plain_again", outputs="logits")(Plain)
    student = build_model("lkd_plain_again", (1, 6, 6), 4)
    wrapped = pickle.dumps(logits_only(student, (1, 6, 6)))
    taken = min(student._forward_hooks)  # the id of the hook that returns its features
    monkeypatch.setattr(hooks.RemovableHandle, "next_id", taken)  # a fresh process counts again: ids collide
    teacher = as_model_output(pickle.loads(wrapped))
    x = torch.rand(3, 1, 6, 6)
    out = teacher(x)
    assert torch.allclose(out.logits, student(x).logits) and torch.allclose(out.features, student(x).features)
    assert teacher.feature_dim == 12
