"""A space of one's own (study/search/space.py): ``imports:``, ``dataset:`` and ``pretrained:``
sections, paths relative to the space file, and a pretrained teacher's own snapshot steps in
``teacher_step`` (``bank``, ``weak``, ``strong``, arms, grids)."""
from __future__ import annotations


import pytest
import torch

from models import registry
from study.search.space import Space, SpaceError, load_space, registered_table
from study.train import datasets


pytestmark = pytest.mark.usefixtures("forget_plugins")  # (tests/conftest.py)


PLUGIN = """from torch import nn
from models import register_model

@register_model("lkd_small_mlp", roles=("student",), outputs="logits")
class SmallMLP(nn.Sequential):
    def __init__(self, shape, classes):
        super().__init__(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], 8), nn.ReLU(), nn.Linear(8, classes))
"""


def write_space(folder, text):
    (folder / "lkd_plugin.py").write_text(PLUGIN)
    (folder / "data" / "pics" / "train" / "a").mkdir(parents=True)
    path = folder / "mine.yaml"
    path.write_text(text)
    return path


def series_space(**fixed) -> Space:
    raw = {"description": "x", "pretrained": {"mine": {"arch": "tiny_cnn", "snapshots": {100: "a.pt", 400: "b.pt",
                                                                                     1000: "c.pt"}}},
           "fixed": {"teachers": "mine", **fixed}}
    return Space.from_dict("x", raw)


def test_a_space_imports_its_plugins_and_names_its_dataset_relative_to_its_file(tmp_path, monkeypatch):
    path = write_space(tmp_path, "description: mine\nimports: [lkd_plugin.py]\n"
                                 "dataset: {image_folder: data/pics, name: pics, resize: [16, 16], "
                                 "shift_magnitudes: [1, 2, 3]}\n"
                                 "fixed: {student: lkd_small_mlp, teachers: cnn_1}\n")
    monkeypatch.chdir("/")  # relative to the file, not to where the command runs
    space = load_space(str(path))
    assert space.imports == (str(tmp_path / "lkd_plugin.py"),) and space.dataset == "pics"
    assert space.students() == ["lkd_small_mlp"]
    assert datasets.dataset_entry("pics").origin[1] == str(tmp_path / "data" / "pics")
    assert datasets.dataset_entry("pics").origin[-1] == (1, 2, 3)  # the dataset's own translation grid
    table = registered_table(space)
    assert "lkd_small_mlp" in table and "pics" in table and "imports" in table


@pytest.mark.parametrize("text, message", [
    ("imports: {a: b}\nfixed: {teachers: cnn_1}\n", "imports must be a list"),
    ("dataset: {folder: x}\nfixed: {teachers: cnn_1}\n", "dataset must be a registered name or"),
    ("dataset: {image_folder: x, size: 3}\nfixed: {teachers: cnn_1}\n", r"unknown option\(s\) \['size'\]"),
    ("dataset: {image_folder: x, resize: big}\nfixed: {teachers: cnn_1}\n", "resize must be a list of numbers"),
    ("dataset: {image_folder: x, shift_magnitudes: 4}\nfixed: {teachers: cnn_1}\n",
     "shift_magnitudes must be a list of numbers"),
    ("pretrained: [a]\nfixed: {teachers: cnn_1}\n", "pretrained must map each teacher's name"),
    ("fixed: {student: lkd_small_mlp, teachers: cnn_1}\n", "valid students are"),  # not imported: unknown
], ids=["imports", "dataset", "dataset-option", "resize", "shifts", "pretrained", "not-imported"])
def test_a_malformed_section_is_one_line(text, message, tmp_path):
    with pytest.raises(SpaceError, match=message):
        load_space(str(write_space(tmp_path, "description: mine\n" + text)))


def test_a_pretrained_series_resolves_against_its_own_steps():
    assert series_space(teacher_step="strong").resolve_steps(500).teacher_caches_used() == [("mine", 1000)]
    assert series_space(teacher_step="weak").resolve_steps(500).teacher_caches_used() == [("mine", 100)]
    bank = series_space(teacher_step="bank").resolve_steps(500)
    assert "teacher_step" in bank.params and bank.arch_steps == {"mine": (100, 400, 1000)}
    assert bank.teacher_caches_used() == [("mine", 100), ("mine", 400), ("mine", 1000)]
    assert bank.grid() == {"step_mine": [100, 400, 1000]}
    assert series_space().resolve_steps(50).teacher_caches_used() == [("mine", 100)]  # --teacher-steps is not its budget
    with pytest.raises(SpaceError, match="teacher_step 50 is not a snapshot step of pretrained teacher mine"):
        series_space(teacher_step=50).resolve_steps(500)


def test_a_pretrained_teacher_beside_a_trained_one_keeps_its_steps():
    import optuna

    raw = {"description": "x", "pretrained": {"mine": {"arch": "tiny_cnn", "snapshots": {7: "a.pt", 9: "b.pt"}}},
           "fixed": {"teachers": "cnn_1+mine"}, "params": {"teacher_step": {"choices": ["bank"]}}}
    space = Space.from_dict("x", raw).resolve_steps(100)
    assert space.teacher_caches_used() == [("cnn_1", 50), ("cnn_1", 100), ("mine", 7), ("mine", 9)]
    trial = optuna.create_study().ask()
    config = space.suggest(trial)
    assert trial.params["step_cnn_1"] in (50, 100) and trial.params["step_mine"] in (7, 9)
    assert config["teachers"] == "cnn_1+mine"
    arms = Space.from_dict("x", {"description": "x", "pretrained": raw["pretrained"], "fixed": {},
                                 "arms": {"cnn": {"teachers": "cnn_1", "teacher_step": 100},
                                          "mine": {"teachers": "mine", "teacher_step": "strong"}}}).resolve_steps(100)
    assert arms.arms["mine"]["step_mine"] == 9 and arms.teacher_caches_used() == [("cnn_1", 100), ("mine", 9)]
    trial = optuna.create_study(sampler=optuna.samplers.GridSampler({"arm": ["mine"]})).ask()
    assert arms.suggest(trial)["step_mine"] == 9


def test_a_pretrained_teacher_is_one_bank():
    with pytest.raises(SpaceError, match="pretrained teacher 'mine' has one bank; it needs teacher_seed 0"):
        series_space(teacher_seed=1)


def test_checkpoints_load_for_the_dataset(tmp_path, mnist):
    from models import build_model
    from study.teachers.pretrained import PretrainedError

    torch.save(build_model("tiny_cnn", (1, 28, 28), 10).state_dict(), tmp_path / "a.pt")
    space = Space.from_dict("x", {"description": "x", "fixed": {"teachers": "mine"},
                                  "pretrained": {"mine": {"arch": "tiny_cnn", "checkpoint": "a.pt"}}}, base=tmp_path)
    space.pretrained[0].check(mnist)
    torch.save(build_model("cnn_1", (1, 28, 28), 10).state_dict(), tmp_path / "a.pt")
    with pytest.raises(PretrainedError, match="does not fit"):
        space.pretrained[0].check(mnist)


def test_models_and_robustness_sections(tmp_path):
    from study.train import plugins

    saved = dict(plugins._ENTRIES)
    try:
        space = Space.from_dict("x", {"description": "x", "robustness": ["rotation", "noise"],
                                      "models": {"lkd_r18": {"model": "torchvision:resnet18", "roles": ["teacher"],
                                                             "features": "avgpool"}},
                                      "fixed": {"teachers": "lkd_r18"}})
        assert space.robustness == ("rotation", "noise") and space.models[0].features == "avgpool"
        assert "lkd_r18" in registry.model_names("teacher") and "lkd_r18" not in registry.model_names("student")
        assert "model lkd_r18" in registered_table(space) and "rotation" in registered_table(space)
        with pytest.raises(Exception, match="unknown robustness family 'blur'"):
            Space.from_dict("x", {"description": "x", "robustness": ["blur"], "fixed": {"teachers": "cnn_1"}})
        with pytest.raises(Exception, match="model 'bad' needs model: torchvision:ARCH"):
            Space.from_dict("x", {"description": "x", "models": {"bad": {"model": "resnet"}},
                                  "fixed": {"teachers": "cnn_1"}})
    finally:
        plugins._ENTRIES.clear()
        plugins._ENTRIES.update(saved)
