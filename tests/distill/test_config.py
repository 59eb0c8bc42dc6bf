"""One validated run configuration (study/distill/config.py): bounds written once and used by the spaces,
the distill CLI and every trial; unknown keys are errors; roles come from the model registry;
KD terms' scales and hyperparameters come from the KD-term registry."""
from __future__ import annotations

import pytest

from losses import all_hyperparams, kd_terms, scale_key
from models import model_names
from study.distill.config import ConfigError, RunConfig, check_value, describe_keys, loss_config, range_text, validate_run
from study.distill.config import run_spec
from study.search.space import Space, SpaceError


def test_every_registered_term_is_a_run_key_with_its_registry_bounds():
    keys = describe_keys()
    for name, term in kd_terms().items():
        assert scale_key(name) in keys
        assert RunConfig().model_dump()[scale_key(name)] == term.default_scale
    for key, hp in all_hyperparams().items():
        assert key in keys and RunConfig().model_dump()[key] == hp.default
        assert range_text(key) == hp.bounds_text
        with pytest.raises(ConfigError, match="out of range"):
            check_value(key, hp.high * 2 + 1 if hp.high != float("inf") else -1.0)


@pytest.mark.parametrize("key", ["label_smoothing", "teacher_label_smoothing"])
def test_label_smoothing_bound_is_the_same_everywhere(key, tmp_path):
    """[0, 1): 0.999 is allowed and 1.0 is not, in a run, in a space file and in --set."""
    assert check_value(key, 0.999) == 0.999
    with pytest.raises(ConfigError, match=r"out of range \[0, 1\)"):
        check_value(key, 1.0)
    raw = {"description": "x", "fixed": {"teachers": "cnn_1", key: 1.0}}
    with pytest.raises(SpaceError, match=r"out of range \[0, 1\)"):
        Space.from_dict("x", raw)
    base = Space.from_dict("x", {"description": "x", "fixed": {"teachers": "cnn_1"}})
    with pytest.raises(SpaceError, match=r"out of range \[0, 1\)"):
        base.with_overrides([f"{key}=1.0"])


def test_unknown_keys_are_errors_and_search_bookkeeping_is_not():
    with pytest.raises(ConfigError, match="unknown key 'nonsense'"):
        validate_run({"teachers": "cnn_1", "step_cnn_1": 250, "nonsense": 1})
    run = validate_run({"teachers": "cnn_1", "step_cnn_1": 250, "arm": "kl", "s_kl_on": True, "s_kl": 0.5})
    assert run.s_kl == 0.5 and run.step_cnn_1 == 250


def test_roles_come_from_the_registry():
    students, teachers = model_names("student"), model_names("teacher")
    only_teachers = sorted(set(teachers) - set(students))
    only_students = sorted(set(students) - set(teachers))
    assert only_teachers and only_students  # e.g. cnn_1 teaches only, vit_1 only learns
    with pytest.raises(ConfigError, match="valid students"):
        validate_run({"student": only_teachers[0]})
    with pytest.raises(ConfigError, match="valid teachers"):
        validate_run({"teachers": only_students[0]})
    assert validate_run({"student": "mlp_1", "teachers": "mlp_1", "step_mlp_1": 50}).teachers == "mlp_1"


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="twice"):
        validate_run({"teachers": "cnn_1+cnn_1"})
    with pytest.raises(ConfigError, match="snapshot step"):
        run_spec({"teachers": "cnn_1"}, dataset="mnist", epochs=1, train_subset=None)
    with pytest.raises(ConfigError):
        validate_run({"seed": True})  # a bool is not a seed


def test_variant_switches_the_poster_terms_and_keeps_the_others():
    run = validate_run({"teachers": "cnn_1", "step_cnn_1": 50, "variant": "type_1", "s_dkd": 0.5})
    loss = loss_config(run)
    assert (loss.s_kl, loss.s_fm, loss.scales["dkd"]) == (0.0, 1.0, 0.5)
    assert loss.variant == "fm+dkd"
    spec = run_spec({"teachers": "cnn_1", "step_cnn_1": 50, "variant": "normal_kd", "s_kl": 2.0},
                    dataset="mnist", epochs=1, train_subset=None)
    assert spec.loss.s_kl == 2.0 and spec.loss.s_fm == 0.0 and spec.params()["variant"] == "normal_kd"


def test_spaces_search_the_new_terms_like_the_poster_ones():
    space = Space.from_dict("x", {"description": "x", "fixed": {"teachers": "cnn_1"},
                                  "params": {"s_dkd": {"float": [0.1, 4.0], "log": True, "or_zero": True},
                                             "dkd_beta": {"float": [1.0, 16.0]}}})
    assert set(space.params) == {"s_dkd", "dkd_beta"}
    with pytest.raises(SpaceError, match="dkd_beta=200.0 is out of range"):
        Space.from_dict("x", {"description": "x", "fixed": {"teachers": "cnn_1"},
                              "params": {"dkd_beta": {"float": [1.0, 200.0]}}})


def test_no_kd_params_log_every_scale_as_zero():
    params = run_spec({"teachers": "none", "alpha": 1.0}, dataset="mnist", epochs=1, train_subset=None).params()
    assert params["variant"] == "no_kd"
    assert all(params[scale_key(n)] == 0.0 for n in kd_terms())


def test_list_keys_prints_every_key_with_its_default_and_range(capsys):
    import run_study

    assert run_study.main(["--list-keys"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(describe_keys())
    assert "[0, 1)" in lines["label_smoothing"] and "(0, 100]" in lines["temperature"]
    assert "8.0" in lines["dkd_beta"] and "[0, 100]" in lines["dkd_beta"]
