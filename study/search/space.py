"""Named search spaces, as data: ``study/search/spaces/<name>.yaml`` -> an Optuna define-by-run space.

A space file has a one-line ``description``, a ``sampler`` (``tpe``, ``random`` or
``grid``), a default ``scheduler`` (``asha`` or ``none``), ``fixed`` values, optional
``arms`` and ``params`` to search. A param is one of::

    alpha:        {float: [0.0, 1.0]}                      # uniform
    temperature:  {float: [1.0, 20.0], log: true}          # log-uniform
    s_kl:         {float: [0.1, 4.0], log: true, or_zero: true}   # exactly 0, or in the range
    teachers:     {choices: [cnn_1, cnn_2, cnn_1+cnn_2]}   # categorical
    teacher_step: {choices: bank}                          # every snapshot step of the bank
    teacher_step: {choices: [weak, strong, 500]}           # weak ~ 10% of --teacher-steps, strong = last

Teacher parameters are conditional, as in Optuna's define-by-run examples: the
snapshot step is sampled per teacher in use (``step_cnn_1``, ``step_cnn_2``) and the
mixing weight only when there are two teachers. ``or_zero`` makes "no KD",
"normal KD", "Type 1" and "Type 2" all reachable from one continuous space.

``arms`` name the configurations of a controlled experiment, each a set of fixed
values on top of ``fixed``; the searcher picks an ``arm`` like any categorical, so a
grid crosses arms with seeds (e.g. CNN and MLP teachers at chosen snapshot steps, each
over teacher seeds x student seeds)::

    arms:
      cnn_2500: {teachers: cnn_1, teacher_step: 2500}
      mlp_2500: {teachers: mlp_1, teacher_step: 2500}
    params:
      teacher_seed: {choices: [0, 1, 2]}
      seed: {choices: [0, 1, 2]}

A study of your own (docs/byo.md) lives in your folder, and its space names what it brings;
paths are relative to the space file::

    imports: [my_models.py]                       # modules that register datasets, models, KD terms
    dataset: {image_folder: data/shapes}          # or a registered name: dataset: shapes
    pretrained:                                   # teachers trained elsewhere: banks without training
      my_cnn: {arch: small_cnn, snapshots: {100: ckpt/step-100.pt, 400: ckpt/step-400.pt}}
    fixed: {student: small_mlp, teachers: my_cnn}

A pretrained teacher's ``teacher_step`` is one of its own steps (``bank``, ``weak`` and ``strong``
resolve against its series, not against ``--teacher-steps``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import yaml

from study.distill.config import ConfigError, check_value, describe_keys
from study.errors import SpaceError  # noqa: F401  (re-exported: callers import it from here)
from study.teachers.bank import TeacherSpec, snapshot_steps
from study.search.own_parts import bring_own_parts, registered_table  # noqa: F401  (re-exported)
from study.teachers.pretrained import PretrainedTeacher, pretrained_teacher
from study.train.plugins import ModelEntry

SPACES_DIR = Path(__file__).with_name("spaces")
SAMPLERS = ("tpe", "random", "grid")
SCHEDULERS = ("asha", "none")
#: Strings pandas reads as missing values in a CSV (``pd.read_csv``'s defaults): not usable as arm names.
#: A copy of pandas' private ``STR_NA_VALUES``, so loading a space does not import pandas;
#: tests/test_spaces.py checks that pandas reads each of them as missing, and that the copy is complete.
MISSING_TOKENS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                            "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
#: Fraction of the teacher-step budget the "weak" (early) snapshot sits at: 2,500 of 25,000.
WEAK_FRACTION = 0.1
#: The sections a space file may have.
SECTIONS = ("description", "sampler", "scheduler", "imports", "dataset", "models", "pretrained", "robustness", "fixed",
            "arms", "params")


@dataclass(frozen=True)
class Param:
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    or_zero: bool = False
    choices: tuple | None = None

    @classmethod
    def parse(cls, name: str, spec: Any) -> "Param":
        if not isinstance(spec, dict) or len({"float", "choices"} & set(spec)) != 1:
            raise SpaceError(f"param {name!r} needs exactly one of 'float: [low, high]' or 'choices: [...]'")
        unknown = set(spec) - {"float", "choices", "log", "or_zero"}
        if unknown:
            raise SpaceError(f"param {name!r} has unknown option(s) {sorted(unknown)}; valid: float, choices, log, or_zero")
        if "choices" in spec:
            choices = spec["choices"]
            if choices == "bank":
                return cls(name, choices=("bank",))
            if not isinstance(choices, list) or not choices:
                raise SpaceError(f"param {name!r}: choices must be a non-empty list")
            return cls(name, choices=tuple(choices))
        bounds = spec["float"]
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)):
            raise SpaceError(f"param {name!r}: float needs [low, high], got {bounds!r}")
        low, high = map(float, bounds)
        if not low < high:
            raise SpaceError(f"param {name!r}: low must be < high, got [{low}, {high}]")
        if spec.get("log") and low <= 0:
            raise SpaceError(f"param {name!r}: a log range needs low > 0, got {low}")
        return cls(name, low, high, bool(spec.get("log")), bool(spec.get("or_zero")))

    def values(self) -> list:
        """Every value (categorical) or the two bounds (float), for validation."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.or_zero and not trial.suggest_categorical(f"{self.name}_on", [True, False]):
            return 0.0
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def _check_value(key: str, value: Any) -> None:
    """A space's value for ``key`` against the run configuration (study/distill/config.py): one-line errors."""
    try:
        check_value(key, value)
    except ConfigError as error:
        raise SpaceError(str(error)) from None


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    sampler: str = "tpe"
    scheduler: str = "asha"
    fixed: dict = field(default_factory=dict)
    params: dict[str, Param] = field(default_factory=dict)
    arms: dict[str, dict] = field(default_factory=dict)
    #: plug-in modules (absolute paths or module names) the space imported: every Ray worker imports them too
    imports: tuple[str, ...] = ()
    #: the dataset the space names (a registered name), or None: ``--dataset``'s default then
    dataset: str | None = None
    #: teachers trained elsewhere (``pretrained:``), registered as teacher models
    pretrained: tuple[PretrainedTeacher, ...] = ()
    #: models named by a spec (``models: {NAME: {model: torchvision:resnet18, features: layer4}}``)
    models: tuple[ModelEntry, ...] = ()
    #: robustness families reported besides translation (``robustness: [rotation, noise]``)
    robustness: tuple[str, ...] = ()
    #: per-teacher snapshot steps where a teacher's differ from the study's schedule (pretrained
    #: teachers' own steps), set by :meth:`resolve_steps`: the choices (or the one fixed step) of ``step_<arch>``
    arch_steps: dict[str, tuple[int, ...]] = field(default_factory=dict)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, name: str, raw: Any, base: str | Path | None = None) -> "Space":
        """A space from its YAML mapping; ``base`` is the folder relative paths (imports, the dataset's
        folder, pretrained checkpoints) start from (the space file's). Imports its plug-ins and
        registers its dataset and pretrained teachers first: its keys may name what they register."""
        if not isinstance(raw, dict):
            raise SpaceError(f"space {name!r} must be a YAML mapping")
        unknown = set(raw) - set(SECTIONS)
        if unknown:
            raise SpaceError(f"space {name!r} has unknown section(s) {sorted(unknown)}; "
                             f"valid: {', '.join(SECTIONS)}")
        own = bring_own_parts(name, raw, base)
        arms = raw.get("arms") or {}
        if not isinstance(arms, dict) or not all(isinstance(v, dict) and v for v in arms.values()):
            raise SpaceError(f"space {name!r}: arms must map each arm's name to a mapping of fixed values")
        unreadable = sorted(str(arm) for arm in arms if str(arm) in MISSING_TOKENS)
        if unreadable:  # the trials table would read these names back as missing values
            raise SpaceError(f"space {name!r}: arm name(s) {unreadable} read back as missing in tables; rename them")
        space = cls(name=name, description=str(raw.get("description", "")).strip(),
                    sampler=raw.get("sampler", "tpe"), scheduler=raw.get("scheduler", "asha"),
                    fixed=dict(raw.get("fixed") or {}),
                    params={k: Param.parse(k, v) for k, v in (raw.get("params") or {}).items()},
                    arms={str(k): dict(v) for k, v in arms.items()},
                    imports=own.imports, dataset=own.dataset, pretrained=own.pretrained, models=own.models,
                    robustness=own.robustness)
        space.validate()
        return space

    def validate(self) -> None:
        if self.sampler not in SAMPLERS:
            raise SpaceError(f"space {self.name!r}: sampler {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if self.scheduler not in SCHEDULERS:
            raise SpaceError(f"space {self.name!r}: scheduler {self.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        keys = describe_keys()
        for key in [*self.fixed, *self.params, *(k for arm in self.arms.values() for k in arm)]:
            if key not in keys:
                raise SpaceError(f"space {self.name!r}: unknown key {key!r}; valid keys: {', '.join(keys)}")
        for key, value in [*self.fixed.items(), *(kv for arm in self.arms.values() for kv in arm.items())]:
            _check_value(key, value)
        for arm, values in self.arms.items():
            if set(values) & set(self.params):
                raise SpaceError(f"space {self.name!r}: arm {arm!r} fixes {sorted(set(values) & set(self.params))}, "
                                 f"which are also searched")
        for param in self.params.values():
            for value in param.values():
                _check_value(param.name, value)
        if "variant" in self.keys and {"s_kl", "s_fm"} & set(self.params):
            raise SpaceError(f"space {self.name!r}: search either variant or s_kl/s_fm, not both")
        if self.sampler == "grid":
            floats = [p.name for p in self.params.values() if p.choices is None]
            if floats:
                raise SpaceError(f"space {self.name!r}: a grid needs choices, but {floats} are ranges")
            if "teachers" in self.params and ({"teacher_step", "teacher_weight"} & set(self.params)):
                # per-teacher steps/weights would give each teacher combination a different grid
                raise SpaceError(f"space {self.name!r}: a grid over teachers needs a fixed teacher_step "
                                 f"and teacher_weight")
        if "teachers" not in self.fixed and "teachers" not in self.params and \
                not (self.arms and all("teachers" in arm for arm in self.arms.values())):
            raise SpaceError(f"space {self.name!r} must fix or search 'teachers'")
        if self.arms and "teacher_step" in self.params:
            raise SpaceError(f"space {self.name!r}: with arms, give each arm its teacher_step")
        pretrained = [arch for arch in self.teacher_archs() if pretrained_teacher(arch) is not None]
        if pretrained and (self.teacher_seeds() != [0] or self.teacher_label_smoothings() != [0.0]):
            raise SpaceError(f"space {self.name!r}: pretrained teacher {pretrained[0]!r} has one bank; it needs "
                             f"teacher_seed 0 and teacher_label_smoothing 0 (neither fixed otherwise nor searched)")

    @property
    def keys(self) -> set[str]:
        return set(self.fixed) | set(self.params) | {k for arm in self.arms.values() for k in arm}

    def with_overrides(self, overrides: Iterable[str]) -> "Space":
        """Apply ``--set key=value`` (YAML-parsed values): fixes the key, searched or not; a list
        (``--set seed=[0,1]``) makes the key a categorical of those choices instead.
        ``--set arm=[kd,fm_erase]`` keeps only those arms of a controlled experiment (a confirmation
        run of a pilot's best schemes), whose findings are still the space's own."""
        fixed, params = dict(self.fixed), dict(self.params)
        keys = describe_keys()
        overridden: set[str] = set()
        kept_arms = list(self.arms)
        for item in overrides:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise SpaceError(f"--set expects key=value, got {item!r}")
            if key == "arm":
                if not self.arms:
                    raise SpaceError(f"--set arm: space {self.name!r} has no arms (spaces with arms: a controlled "
                                     f"experiment's, e.g. transfer, inductive_bias)")
                kept_arms = self._kept_arms(text)
                continue
            if key not in keys:
                raise SpaceError(f"--set {key}: unknown key; valid keys: {', '.join(keys)}")
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                raise SpaceError(f"--set {key}: cannot parse value {text!r}") from None
            overridden.add(key)
            if isinstance(value, list):  # --set seed=[0,1]: search these choices (a grid axis)
                if not value:
                    raise SpaceError(f"--set {key}: give at least one choice")
                params[key] = Param(key, choices=tuple(value))
                fixed.pop(key, None)
                continue
            fixed[key] = value
            params.pop(key, None)
            if key == "teachers" and len(str(value).split("+")) < 2:
                params.pop("teacher_weight", None)
        # an override wins over the arms too; the space's own ``fixed`` values do not (arms refine them)
        arms = {name: {k: v for k, v in self.arms[name].items() if k not in overridden} for name in kept_arms}
        space = replace(self, fixed=fixed, params=params, arms={k: v for k, v in arms.items() if v})
        space.validate()
        return space

    def _kept_arms(self, text: str) -> list[str]:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise SpaceError(f"--set arm: cannot parse value {text!r}") from None
        names = [str(v) for v in (value if isinstance(value, list) else [value])]
        unknown = [n for n in names if n not in self.arms]
        if not names or unknown:
            raise SpaceError(f"--set arm: unknown arm(s) {', '.join(unknown) or '(none given)'}; "
                             f"arms of {self.name}: {', '.join(self.arms)}")
        return list(dict.fromkeys(names))

    # -- teachers -------------------------------------------------------------------------
    def teacher_combinations(self) -> list[str]:
        combos = [str(c) for c in self.params["teachers"].choices] if "teachers" in self.params else \
            [str(self.fixed["teachers"])] if "teachers" in self.fixed else []
        return list(dict.fromkeys(combos + [str(arm["teachers"]) for arm in self.arms.values() if "teachers" in arm]))

    def teacher_archs(self) -> list[str]:
        return sorted({a for combo in self.teacher_combinations() if combo != "none" for a in combo.split("+")})

    def teacher_label_smoothings(self) -> list[float]:
        if "teacher_label_smoothing" in self.params:
            return [float(v) for v in self.params["teacher_label_smoothing"].choices]
        return [float(self.fixed.get("teacher_label_smoothing", 0.0))]

    def teacher_seeds(self) -> list[int]:
        if "teacher_seed" in self.params:
            return [int(v) for v in self.params["teacher_seed"].choices]
        return [int(self.fixed.get("teacher_seed", 0))]

    def teacher_specs(self, dataset: str) -> list[TeacherSpec]:
        """Every teacher bank a trial of this space can use (one per architecture, seed and smoothing)."""
        return [TeacherSpec(dataset, arch, seed, ls) for arch in self.teacher_archs()
                for seed in self.teacher_seeds() for ls in self.teacher_label_smoothings()]

    def steps_of(self, arch: str, teacher_steps: int) -> list[int]:
        """The snapshot steps ``arch``'s bank has or will have: a pretrained teacher's own, else the
        study's schedule up to ``teacher_steps``."""
        teacher = pretrained_teacher(arch)
        return teacher.steps if teacher is not None else snapshot_steps(teacher_steps)

    def resolve_steps(self, teacher_steps: int) -> "Space":
        """Replace ``bank``/``weak``/``strong`` by snapshot steps and drop steps beyond the budget.

        A pretrained teacher's steps are its own: its values resolve against its series and are kept
        per teacher in :attr:`arch_steps` (arms: as ``step_<arch>``) when they differ from the others'."""
        archs = self.teacher_archs()
        own = {arch: pretrained_teacher(arch).steps for arch in archs if pretrained_teacher(arch) is not None}
        available = snapshot_steps(teacher_steps)
        if not available and (not archs or len(own) < len(archs)):
            raise SpaceError(f"--teacher-steps must be >= 50 (the first snapshot), got {teacher_steps}")

        def named(steps: list[int], budget: int) -> dict[str, int]:
            weak = min(steps, key=lambda s: (abs(s - WEAK_FRACTION * budget), s))
            return {"weak": weak, "strong": steps[-1]}

        def resolve(values: list, arch: str | None = None) -> list[int]:
            steps = own.get(arch, available) if arch else available
            if not steps:
                raise SpaceError(f"--teacher-steps must be >= 50 (the first snapshot), got {teacher_steps}")
            names = named(steps, steps[-1] if arch in own else teacher_steps)
            if values == ["bank"]:
                return list(steps)
            found = []
            for v in values:
                step = names.get(v, v)
                if step not in steps and v not in names:
                    if isinstance(v, int) and v > steps[-1]:
                        continue  # beyond this budget: dropped
                    whose = f" of pretrained teacher {arch}" if arch in own else ""
                    raise SpaceError(f"teacher_step {v} is not a snapshot step{whose}; valid: "
                                     f"{', '.join(map(str, steps))}")
                found.append(step)
            if not found:
                budget = f"pretrained teacher {arch}'s steps" if arch in own else f"--teacher-steps {teacher_steps}"
                raise SpaceError(f"no teacher_step of {values} fits {budget}")
            return list(dict.fromkeys(found))

        trained = [arch for arch in archs if arch not in own]
        general = trained[0] if trained else (archs[0] if archs else None)

        def general_resolve(values: list) -> list[int]:
            return resolve(values, None if general is None or general not in own else general)

        fixed, params = dict(self.fixed), dict(self.params)
        arch_steps: dict[str, tuple[int, ...]] = {}
        arms = {}
        for name, values in self.arms.items():
            values = dict(values)
            teachers = str(values.get("teachers", fixed.get("teachers", "none")))
            arm_archs = [] if teachers == "none" else teachers.split("+")
            # the arm's teacher_step reads against its trained teachers' schedule, or (pretrained only) its first's
            ref = None if not arm_archs or any(a not in own for a in arm_archs) else arm_archs[0]
            value = values.get("teacher_step", fixed.get("teacher_step", "weak"))
            try:
                if "teacher_step" in values:
                    values["teacher_step"] = resolve([values["teacher_step"]], ref)[0]
                elif arm_archs and "teacher_step" not in fixed:
                    values["teacher_step"] = resolve(["weak"], ref)[0]
                for arch in arm_archs:
                    if arch in own:
                        values[f"step_{arch}"] = resolve([value], arch)[0]
            except SpaceError:
                lasts = [own.get(a, available)[-1] for a in arm_archs if own.get(a, available)] or available[-1:]
                if isinstance(value, int) and lasts and value > min(lasts):
                    continue  # this arm's snapshot is beyond the budget: the arm is dropped
                raise
            arms[name] = values
        if self.arms and not arms:
            raise SpaceError(f"space {self.name!r}: no arm's teacher_step fits --teacher-steps {teacher_steps}")
        if "teacher_step" in params:
            choices = list(params["teacher_step"].choices)
            params["teacher_step"] = replace(params["teacher_step"], choices=tuple(general_resolve(choices)))
            arch_steps = {arch: tuple(resolve(choices, arch)) for arch in own}
        elif "teacher_step" in fixed:
            value = fixed["teacher_step"]
            steps = general_resolve([value])
            arch_steps = {arch: tuple(resolve([value], arch)) for arch in own}
            if len(steps) > 1 or any(len(v) > 1 for v in arch_steps.values()):
                # 'bank' as a fixed value means: search them all
                params["teacher_step"] = Param("teacher_step", choices=tuple(steps))
                del fixed["teacher_step"]
            else:
                fixed["teacher_step"] = steps[0]
        elif archs and not self.arms:
            fixed["teacher_step"] = general_resolve(["weak"])[0]
            arch_steps = {arch: tuple(resolve(["weak"], arch)) for arch in own}
        return replace(self, fixed=fixed, params=params, arms=arms, arch_steps=arch_steps)

    def teacher_steps_used(self) -> list[int]:
        """Snapshot steps a trial may ask for (after :meth:`resolve_steps`): what needs a cache."""
        steps = {a["teacher_step"] for a in self.arms.values() if "teacher_step" in a}
        return sorted(steps | set(self._general_steps()) | {step for _, step in self.teacher_caches_used()})

    def _general_steps(self) -> list[int]:
        if "teacher_step" in self.params:
            return list(self.params["teacher_step"].choices)
        return [self.fixed["teacher_step"]] if "teacher_step" in self.fixed else []

    def teacher_caches_used(self) -> list[tuple[str, int]]:
        """(architecture, snapshot step) pairs a trial may ask for: arms name theirs, other spaces
        may combine any teacher with any of its steps."""
        if not self.arms:
            return sorted((arch, step) for arch in self.teacher_archs()
                          for step in self.arch_steps.get(arch, self._general_steps()))
        pairs = set()
        for arm in self.arms.values():
            for a in self._arm_teachers(arm):
                pairs.add((a, arm.get(f"step_{a}", arm.get("teacher_step", self.fixed.get("teacher_step")))))
        return sorted(pairs)

    def _arm_teachers(self, arm: dict) -> list[str]:
        """The teacher architectures an arm distils from (its own, else the space's fixed ones); [] for none."""
        teachers = str(arm.get("teachers", self.fixed.get("teachers", "none")))
        return [] if teachers == "none" else teachers.split("+")

    # -- Optuna ---------------------------------------------------------------------------
    def suggest(self, trial: Any) -> dict[str, Any]:
        """The define-by-run function: samples ``params`` on ``trial`` and returns the constants.

        Optuna records what was sampled; the returned dict holds the fixed values
        (and zeros of switched-off terms), so a trial's config is complete.
        """
        fixed = dict(self.fixed)
        constants: dict[str, Any] = {}
        cells = self.arm_cells()
        if cells:
            arm, teacher_seed = cells[trial.suggest_categorical("cell", list(cells))]
            constants.update(arm=arm, teacher_seed=teacher_seed)
        elif self.arms:
            arm = trial.suggest_categorical("arm", list(self.arms))
        if self.arms:
            fixed.update(self.arms[arm])
            constants.update({k: v for k, v in self.arms[arm].items() if k != "teacher_step"})
        constants.update({k: v for k, v in fixed.items() if k != "teacher_step"})
        values: dict[str, Any] = {}
        for name, param in self.params.items():
            if name in ("teacher_step", "teacher_weight") or (cells and name == "teacher_seed"):
                continue
            values[name] = param.suggest(trial)
        teachers = str(values.get("teachers", fixed.get("teachers")))
        archs = [] if teachers == "none" else teachers.split("+")
        for arch in archs:
            if f"step_{arch}" in fixed:  # an arm's pretrained teacher: its own step
                continue
            if "teacher_step" in self.params:
                choices = self.arch_steps.get(arch, self.params["teacher_step"].choices)
                step_param = replace(self.params["teacher_step"], name=f"step_{arch}", choices=tuple(choices))
                values[f"step_{arch}"] = step_param.suggest(trial)
            else:
                constants[f"step_{arch}"] = self.arch_steps[arch][0] if arch in self.arch_steps \
                    else fixed["teacher_step"]
        if len(archs) == 2 and "teacher_weight" in self.params:
            values["teacher_weight"] = self.params["teacher_weight"].suggest(trial)
        constants.update({k: v for k, v in values.items()
                          if isinstance(v, float) and v == 0.0 and k in ("s_kl", "s_fm")})
        return constants

    def arm_cells(self) -> dict[str, tuple[str, int]]:
        """``cell -> (arm, teacher seed)`` when arms cross teacher seeds and some arm has no teacher; else empty.

        An arm without a teacher (no KD, an augmentation control) is one student per student seed:
        crossing it with teacher seeds would train the same student once per teacher seed, and the
        paired statistics would count the copies as independent units. Such a grid is over cells
        instead: ``kd@teacher_seed=1`` for each arm with a teacher and seed, ``aug_erase`` once.
        """
        if not self.arms or "teacher_seed" not in self.params:
            return {}
        seeds = self.teacher_seeds()
        teacherless = {name for name, arm in self.arms.items() if not self._arm_teachers(arm)}
        if not teacherless or len(seeds) < 2:
            return {}
        cells: dict[str, tuple[str, int]] = {}
        for name in self.arms:
            for seed in seeds[:1] if name in teacherless else seeds:
                cells[name if name in teacherless else f"{name}@teacher_seed={seed}"] = (name, seed)
        return cells

    def grid(self) -> dict[str, list]:
        """The search space of Optuna's GridSampler (a grid over teachers has fixed steps and weights)."""
        cells = self.arm_cells()
        grid: dict[str, list] = {"cell": list(cells)} if cells else {"arm": list(self.arms)} if self.arms else {}
        for name, param in self.params.items():
            if cells and name == "teacher_seed":
                continue
            if name == "teacher_step":
                for arch in self.teacher_archs():
                    grid[f"step_{arch}"] = list(self.arch_steps.get(arch, param.choices))
            else:
                grid[name] = list(param.choices)
        return grid

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def baseline_seeds(self, seed: int) -> list[int]:
        if "seed" in self.params:
            return [int(s) for s in self.params["seed"].choices]
        return [int(self.fixed.get("seed", seed))]

    def students(self) -> list[str]:
        """Every student a trial of this space can train (fixed, searched or named by arms)."""
        if "student" in self.params:
            found = [str(c) for c in self.params["student"].choices]
        else:
            found = [str(arm["student"]) for arm in self.arms.values() if "student" in arm]
            if not found or len(found) < len(self.arms):
                found.insert(0, str(self.fixed.get("student", "mlp_1")))
        return list(dict.fromkeys(found))

    def baseline_config(self, seed: int, student: str | None = None) -> dict[str, Any]:
        """The no-KD student this space is compared with: same student, CE only."""
        return {"baseline": True, "teachers": "none", "student": student or self.students()[0],
                "alpha": 1.0, "s_kl": 0.0, "s_fm": 0.0, "temperature": 1.0,
                "label_smoothing": float(self.fixed.get("label_smoothing", 0.0)), "seed": seed}

    def baseline_configs(self, seed: int) -> list[dict[str, Any]]:
        """One no-KD baseline per student and student seed (a ViT and an MLP each get their own)."""
        return [self.baseline_config(s, student) for student in self.students() for s in self.baseline_seeds(seed)]


# ----------------------------------------------------------------------------- registry

def space_names() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str) -> Space:
    """A space by name (``study/search/spaces/<name>.yaml``) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = SPACES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise SpaceError(f"unknown space {name_or_path!r}; valid spaces: {', '.join(space_names())}")
    if not path.is_file():
        raise SpaceError(f"space file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpaceError(f"space file {path}{where} is not valid YAML: {getattr(error, 'problem', error)}") from None
    return Space.from_dict(path.stem, raw, base=path.resolve().parent)


def list_spaces() -> list[tuple[str, str]]:
    return [(name, load_space(name).description) for name in space_names()]
