import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from study.distill.config import run_spec
from study.search.space import Space, SpaceError, list_spaces, load_space, space_names

ROOT = Path(__file__).resolve().parents[2]
optuna.logging.set_verbosity(optuna.logging.WARNING)
EXPECTED = {"leveled_kd", "snapshot_sweep", "kd_types", "alpha_sweep", "label_smoothing", "multi_teacher",
            "teacher_combinations", "transfer", "transfer_search"}


def test_named_spaces_are_listed_with_descriptions():
    names = dict(list_spaces())
    assert EXPECTED <= set(names)
    assert all(desc and "\n" not in desc for desc in names.values())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_space_builds_valid_optuna_distributions(name):
    space = load_space(name).resolve_steps(2500)
    sampler = (optuna.samplers.GridSampler(space.grid(), seed=0) if space.sampler == "grid"
               else optuna.samplers.TPESampler(seed=0))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    n = space.grid_size() if space.sampler == "grid" else 30

    def objective(trial):
        constants = space.suggest(trial)
        config = {**trial.params, **constants}
        for dist in trial.distributions.values():
            assert isinstance(dist, optuna.distributions.BaseDistribution)
        spec = run_spec(config, dataset="mnist", epochs=1, train_subset=None)
        assert 0.0 <= spec.alpha <= 1.0 and spec.loss.temperature > 0
        assert all(t.step in space.teacher_steps_used() for t in spec.teachers)
        return 0.5

    study.optimize(objective, n_trials=n, catch=())
    assert len(study.trials) == n
    if space.sampler == "grid":  # the grid is enumerated exactly once
        assert len({tuple(sorted(t.params.items())) for t in study.trials}) == space.grid_size()


def test_leveled_kd_reaches_every_variant_and_conditional_teacher_params():
    space = load_space("leveled_kd").resolve_steps(1000)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    variants, two_teacher_weights, one_teacher_weights = set(), 0, 0
    for _ in range(200):
        trial = study.ask()
        constants = space.suggest(trial)
        config = {**trial.params, **constants}
        spec = run_spec(config, dataset="mnist", epochs=1, train_subset=None)
        variants.add(spec.loss_config.variant)
        if len(spec.teachers) == 2:
            two_teacher_weights += "teacher_weight" in trial.params
            assert "step_cnn_1" in trial.params and "step_cnn_2" in trial.params
        else:
            one_teacher_weights += "teacher_weight" in trial.params
        study.tell(trial, 0.0)
    assert variants == {"no_kd", "normal_kd", "type_1", "type_2"}
    assert two_teacher_weights > 0 and one_teacher_weights == 0


def test_weak_and_strong_steps_follow_the_budget():
    space = load_space("kd_types")
    assert space.resolve_steps(25000).grid()["step_cnn_1"] == [2500, 25000]
    assert space.resolve_steps(1000).grid()["step_cnn_1"] == [100, 1000]
    sweep = load_space("snapshot_sweep").resolve_steps(2500)
    assert sweep.grid()["step_cnn_1"] == [100, 250, 500, 1000, 2500]  # beyond the budget: dropped


def test_overrides_fix_values_and_bad_ones_are_rejected():
    space = load_space("leveled_kd").with_overrides(["teachers=cnn_1", "alpha=0.3"])
    assert space.fixed["teachers"] == "cnn_1" and "teachers" not in space.params
    assert "teacher_weight" not in space.params and space.fixed["alpha"] == 0.3
    for bad, message in [(["alpha=1.5"], "out of range"), (["nonsense=1"], "unknown key"),
                         (["alpha"], "key=value"), (["teachers=resnet"], "valid teachers"),
                         (["temperature=-1"], "out of range")]:
        with pytest.raises(SpaceError, match=message):
            load_space("leveled_kd").with_overrides(bad)


@pytest.mark.parametrize("raw,message", [
    ({"params": {"alpha": {"float": [0.8, 0.2]}}, "fixed": {"teachers": "cnn_1"}}, "low must be < high"),
    ({"params": {"temperature": {"float": [0.0, 5.0], "log": True}}, "fixed": {"teachers": "cnn_1"}}, "log range"),
    ({"params": {"alpha": {"float": [0.0, 2.0]}}, "fixed": {"teachers": "cnn_1"}}, "out of range"),
    ({"params": {"alpha": {"choices": []}}, "fixed": {"teachers": "cnn_1"}}, "non-empty"),
    ({"sampler": "grid", "params": {"alpha": {"float": [0.0, 1.0]}}, "fixed": {"teachers": "cnn_1"}}, "grid needs"),
    ({"sampler": "cmaes", "fixed": {"teachers": "cnn_1"}}, "sampler"),
    ({"sampler": "grid", "params": {"teachers": {"choices": ["cnn_1", "cnn_1+cnn_2"]},
                                    "teacher_step": {"choices": [100, 500]}}}, "grid over teachers needs"),
    ({"fixed": {"alpha": 0.5}}, "teachers"),
])
def test_bad_ranges_are_one_line_errors(raw, message):
    with pytest.raises(SpaceError, match=message):
        Space.from_dict("bad", raw)


def test_unknown_space_names_the_valid_ones():
    with pytest.raises(SpaceError) as info:
        load_space("nope")
    assert all(name in str(info.value) for name in space_names())


def run_study(*args):
    return subprocess.run([sys.executable, "run_study.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args,message", [
    (["--space", "nope"], "unknown space 'nope'; valid spaces:"),
    (["--set", "alpha=7"], "alpha=7 is out of range"),
    (["--set", "what=1"], "unknown key"),
    (["--max-epochs", "0"], "--max-epochs must be >= 1"),
    (["--space", "snapshot_sweep", "--teacher-steps", "20"], "--teacher-steps must be >= 50"),
])
def test_cli_bad_input_exits_nonzero_with_one_line(args, message):
    result = run_study(*args, "--dry-run")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.strip().count("\n") == 0


def test_cli_bad_yaml_file_is_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("params:\n  alpha: {float: [0, 1]\n")
    result = run_study("--space", str(path), "--dry-run")
    assert result.returncode == 2 and "not valid YAML" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_list_spaces_and_dry_run_plan():
    listing = run_study("--list-spaces")
    assert listing.returncode == 0 and all(name in listing.stdout for name in EXPECTED)
    plan = run_study("--space", "kd_types", "--dry-run", "--teacher-steps", "25000")
    assert plan.returncode == 0
    assert "planned_trials" in plan.stdout and "21" in plan.stdout  # 18 grid points + 3 baselines (one per seed)
    assert "teacher_snapshots_used  [2500, 25000]" in plan.stdout


def test_arms_cross_with_seeds_and_drop_beyond_the_budget():
    import optuna

    space = load_space("inductive_bias").resolve_steps(2500)
    assert set(space.arms) == {"cnn_early", "cnn_weak", "mlp_weak", "cnn_weak_soft_only"}  # 25k arms dropped
    assert space.teacher_caches_used() == [("cnn_1", 250), ("cnn_1", 2500), ("mlp_1", 2500)]
    assert {s.key for s in space.teacher_specs("mnist")} == {f"mnist/{a}/seed-{s}" for a in ("cnn_1", "mlp_1")
                                                             for s in (0, 1, 2)}
    assert space.grid_size() == 4 * 3 * 3
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space.grid(), seed=0))
    seen = set()

    def objective(trial):
        config = {**space.suggest(trial), **trial.params}
        spec = run_spec(config, dataset="mnist", epochs=1, train_subset=None)
        arm = space.arms[config["arm"]]
        assert spec.teachers[0].arch == arm["teachers"] and spec.teachers[0].step == arm["teacher_step"]
        assert spec.teachers[0].seed == config["teacher_seed"]
        assert spec.alpha == arm.get("alpha", 0.5)
        seen.add((config["arm"], config["teacher_seed"], config["seed"]))
        return 0.0

    study.optimize(objective, n_trials=space.grid_size())
    assert len(seen) == space.grid_size()


def test_roles_come_from_the_registry_not_the_name():
    from study.search.space import Space

    Space.from_dict("mlp_teacher", {"fixed": {"teachers": "mlp_1", "student": "mlp_2"}})  # the control arm
    with pytest.raises(SpaceError, match="student="):
        Space.from_dict("cnn_student", {"fixed": {"teachers": "cnn_1", "student": "cnn_1"}})
    with pytest.raises(SpaceError, match="teacher_seed"):
        Space.from_dict("bad_seed", {"fixed": {"teachers": "cnn_1", "teacher_seed": -1}})


def test_set_with_a_list_searches_those_choices():
    space = load_space("inductive_bias").with_overrides(["seed=[0,1]", "teacher_seed=[2]"])
    assert space.params["seed"].choices == (0, 1) and space.params["teacher_seed"].choices == (2,)
    assert space.resolve_steps(2500).grid_size() == 4 * 2 * 1
    with pytest.raises(SpaceError, match="seed"):
        load_space("inductive_bias").with_overrides(["seed=[0,-1]"])


def test_overrides_keep_the_arms_own_values():
    """--set of an unrelated key must not reset what an arm fixes over ``fixed`` (soft-only: alpha 0)."""
    space = load_space("inductive_bias").with_overrides(["seed=0"]).resolve_steps(2500)
    assert space.arms["cnn_weak_soft_only"]["alpha"] == 0.0 and space.fixed["alpha"] == 0.5
    forced = load_space("inductive_bias").with_overrides(["alpha=0.3"])
    assert "alpha" not in forced.arms["cnn_weak_soft_only"] and forced.fixed["alpha"] == 0.3


def test_every_student_of_a_space_gets_its_own_no_kd_baseline():
    space = load_space("cit_vit")
    assert space.students() == ["vit_1", "mlp_1"]
    baselines = space.baseline_configs(0)
    assert sorted((b["student"], b["seed"]) for b in baselines) == [(s, k) for s in ("mlp_1", "vit_1")
                                                                   for k in (0, 1, 2)]
    assert all(b["teachers"] == "none" and b["baseline"] for b in baselines)
    assert load_space("leveled_kd").students() == ["mlp_1"]


def test_kd_methods_space_is_one_arm_per_method():
    from losses import kd_terms

    space = load_space("kd_methods")
    assert set(space.arms) == {"kl", "fm", "dkd", "dist", "rkd"} <= set(kd_terms())
    for name, arm in space.arms.items():
        spec = run_spec({**space.fixed, **arm, "step_cnn_1": 250}, dataset="mnist", epochs=1, train_subset=None)
        assert spec.loss.active_terms == [name]
    assert space.grid_size() == len(space.arms) * 3


def test_arm_names_that_tables_would_read_as_missing_are_refused():
    raw = {"description": "x", "fixed": {"teachers": "cnn_1"}, "arms": {"null": {"alpha": 0.5}, "kd": {"alpha": 0.1}}}
    with pytest.raises(SpaceError, match="read back as missing"):
        Space.from_dict("x", raw)
    import io

    import pandas as pd

    from study.search.space import MISSING_TOKENS

    assert pd.read_csv(io.StringIO("arm\n" + "\n".join(sorted(MISSING_TOKENS - {""})) + "\n"))["arm"].isna().all()
    # and the copy is complete: a token a newer pandas adds must be added here too
    parsers = pytest.importorskip("pandas._libs.parsers")
    assert MISSING_TOKENS == frozenset(parsers.STR_NA_VALUES)


def test_transfer_spaces_resolve_every_arm_and_sample_into_runs():
    """Both transfer spaces load, and every arm (and sampled configuration) is a valid run of the scheme it names."""
    from study.train.views import ViewSet

    space = load_space("transfer").resolve_steps(2500)
    assert set(space.arms) == {"kd", "kd_soft", "fm_mixup", "aug_mixup", "fm_noise", "aug_noise", "fm_erase",
                               "aug_erase", "trajectory", "kd_cosine", "jacobian", "mlp_teacher_mixup",
                               "mlp_teacher_erase", "kd_maxpool", "fm_mixup_maxpool", "fm_erase_k16", "fm_erase_large",
                               "fm_erase_features"}
    assert space.grid_size() == 18 and space.teacher_archs() == ["cnn_1", "cnn_1_maxpool", "mlp_1"]
    specs = {}
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space.grid(), seed=0))

    def objective(trial):  # each grid point through the searcher's own define-by-run function
        config = {**space.suggest(trial), **trial.params}
        specs[config["arm"]] = run_spec(config, dataset="mnist", epochs=3, train_subset=None)
        return 0.0

    study.optimize(objective, n_trials=space.grid_size())
    assert set(specs) == set(space.arms)
    for arm, spec in specs.items():
        view = arm.split("_")[1] if arm.startswith("fm_") else \
            arm.split("_")[-1] if arm.startswith(("aug_", "mlp_teacher_")) else None
        variation = {"fm_erase_k16": {"k": 16}, "fm_erase_large": {"erase_max": 0.6}}.get(arm, {})
        assert spec.views == (ViewSet.create(view, **variation) if view else None), arm
        if arm.startswith("aug_"):  # the controls: CE only, no teacher (no KD itself is the baseline trial)
            assert not spec.uses_teachers and spec.alpha == 1.0 and spec.params()["variant"] == "no_kd"
        else:
            (teacher,) = spec.teachers
            arch = "mlp_1" if arm.startswith("mlp") else "cnn_1_maxpool" if arm.endswith("maxpool") else "cnn_1"
            assert teacher.step == 2500 and teacher.arch == arch
            assert spec.loss.s_kl == 1.0 and spec.loss.temperature == 4.0
            assert spec.alpha == (0.0 if arm.startswith(("fm_", "mlp_", "kd_soft")) else 0.5), arm
    assert specs["trajectory"].teachers[0].trajectory == (50, 100, 150, 200, 250, 300, 350, 400, 450, 500, 1000,
                                                          1500, 2000, 2500)
    assert all(s.teachers[0].trajectory == () for a, s in specs.items() if a != "trajectory" and s.teachers)
    assert specs["kd_cosine"].lr_schedule == "cosine" and specs["kd"].lr_schedule == "constant"
    assert specs["jacobian"].directions is not None and specs["kd"].directions is None

    search = load_space("transfer_search").resolve_steps(25000)
    assert search.fixed["teacher_step"] == 2500 and search.sampler == "tpe" and search.scheduler == "none"
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        constants = search.suggest(trial)
        spec = run_spec({**trial.params, **constants}, dataset="mnist", epochs=3, train_subset=None)
        seen.add((spec.views.name if spec.views else "none", spec.lr_schedule, bool(spec.teachers[0].trajectory)))
        study.tell(trial, 0.0)
    assert {v for v, _, _ in seen} == {"none", "mixup", "noise", "erase"}
    assert {lr for _, lr, _ in seen} == {"constant", "cosine"} and {t for _, _, t in seen} == {True, False}


def test_transfer_dry_run_plans_every_arm_at_the_budget_it_needs():
    default = run_study("--space", "transfer", "--dry-run")
    assert default.returncode == 0, default.stderr  # at --teacher-steps 500 the 2500 arms drop out: the 3 controls + the baseline
    assert "planned_trials          4" in default.stdout
    full = run_study("--space", "transfer", "--dry-run", "--teacher-steps", "2500")
    assert full.returncode == 0 and "planned_trials          19" in full.stdout  # 18 arms + the no-KD baseline
    assert "mnist/mlp_1/seed-0" in full.stdout


def test_an_arm_without_a_teacher_is_trained_once_per_student_seed_not_once_per_teacher_seed():
    """Crossing a control (no teacher) with teacher seeds would train the same student three times and
    count the copies as independent units; the grid is over (arm, teacher seed) cells instead."""
    space = load_space("transfer").with_overrides(["seed=[0,1]", "teacher_seed=[0,1,2]"]).resolve_steps(2500)
    teacherless = {"aug_mixup", "aug_noise", "aug_erase"}
    assert space.grid_size() == (3 * (len(space.arms) - len(teacherless)) + len(teacherless)) * 2
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space.grid(), seed=0))
    seen = []

    def objective(trial):
        constants = space.suggest(trial)
        config = {**trial.params, **constants}  # as Ray's OptunaSearch merges them: constants win
        spec = run_spec(config, dataset="mnist", epochs=1, train_subset=None)
        assert config["arm"] in space.arms
        if config["arm"] in teacherless:
            assert not spec.teachers
        else:
            assert spec.teachers[0].seed == config["teacher_seed"]
        seen.append((config["arm"], None if config["arm"] in teacherless else config["teacher_seed"], config["seed"]))
        return 0.0

    study.optimize(objective, n_trials=space.grid_size())
    assert len(seen) == len(set(seen)) == space.grid_size()
    assert sorted(s for a, _, s in seen if a == "aug_erase") == [0, 1]
    assert sorted((t, s) for a, t, s in seen if a == "kd") == [(t, s) for t in (0, 1, 2) for s in (0, 1)]
    # one teacher seed, or no arm without a teacher: the plain arm x seed grid, as before
    assert "arm" in load_space("transfer").resolve_steps(2500).grid()
    assert "arm" in load_space("inductive_bias").resolve_steps(2500).grid()


def test_set_arm_keeps_only_the_named_arms_and_refuses_unknown_ones():
    space = load_space("transfer").with_overrides(["arm=[kd,fm_erase,aug_erase]", "seed=[0,1,2]",
                                                   "teacher_seed=[0,1,2]"]).resolve_steps(2500)
    assert list(space.arms) == ["kd", "fm_erase", "aug_erase"]
    assert space.arms["fm_erase"] == load_space("transfer").arms["fm_erase"]
    assert space.grid_size() == (3 + 3 + 1) * 3 and space.teacher_archs() == ["cnn_1"]
    assert list(load_space("transfer").with_overrides(["arm=kd"]).arms) == ["kd"]
    with pytest.raises(SpaceError, match="unknown arm.*fm_jacobian.*arms of transfer: kd, kd_soft"):
        load_space("transfer").with_overrides(["arm=[kd,fm_jacobian]"])
    with pytest.raises(SpaceError, match="space 'leveled_kd' has no arms"):
        load_space("leveled_kd").with_overrides(["arm=kd"])
