"""One validated run configuration: every key a run may have, its type, bounds, default and
the cross-field rules, in one pydantic model.

The search spaces (their keys, fixed values, ranges and ``--set`` overrides), the distill
CLI, ``run_study.py`` and every Tune trial validate against :class:`RunConfig`, so a bound
is written once (label smoothing is ``[0, 1)`` everywhere, not ``< 1`` in one place and
``<= 0.999`` in another), unknown keys are errors, and a model's role (teacher or student)
comes from the model registry, not from its name. The KD terms' scales (``s_<term>``) and
hyperparameters are fields generated from the KD-term registry (losses/registry.py), so a
new method is searchable, settable and validated without touching this file; the same holds for
the views of function matching (``views`` and each view's parameters, study/train/views.py).
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Mapping, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)

from losses import POSTER_VARIANTS, LeveledKDConfig, all_hyperparams, kd_terms, scale_key
from losses.registry import interval_text
from models import model_names

from study.distill.spec import RunSpec, TeacherRef
from study.errors import UserError
from study.teachers.bank import snapshot_steps
from study.train.views import MAX_VIEWS_K, ViewSet, view_class, view_hyperparams, view_names

#: The poster's named points of the formula: which of (s_kl, s_fm) is on (from the loss's own names).
VARIANTS = {name: (float("kl" in terms), float("fm" in terms)) for terms, name in POSTER_VARIANTS.items()}
#: Keys the searcher adds to a trial's config that are not run settings: the arm it picked, the
#: (arm, teacher seed) cell of a grid whose controls have no teacher, and Optuna's "is this scale
#: exactly 0?" switches (``s_kl_on``).
SEARCH_BOOKKEEPING = ("arm", "cell")


class ConfigError(UserError, ValueError):
    """A run setting is unknown, of the wrong type or out of range; the message says which and why."""


def _resolve(name: str) -> None:
    """A model named by a scheme (``torchvision:resnet18``, ``timm:...``, ``my_pkg.models:Net``) is
    registered the first time a run names it (:func:`models.hub.resolve_model`); a failure is a ValueError."""
    if ":" in name:
        from models.hub import resolve_model

        try:
            resolve_model(name)
        except (ImportError, ValueError) as error:
            raise ValueError(str(error).splitlines()[0]) from None


def _student(name: str) -> str:
    _resolve(name)
    if name not in model_names("student"):
        raise ValueError(f"valid students are {', '.join(model_names('student'))}")
    return name


def _teachers(value: str) -> str:
    for name in value.split("+"):
        _resolve(name)
    valid = model_names("teacher")
    if value != "none" and any(a not in valid for a in value.split("+")):
        raise ValueError(f"valid teachers are {', '.join(valid)} (joined by '+') or none")
    return value


def _trajectory(value: Any) -> Any:
    """``none``, ``bank`` or snapshot steps in increasing order (a list, or ``250,500,1000`` as text:
    what ``--set`` and an Optuna choice can carry; one number is one step) as a tuple."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str) and value not in ("none", "bank"):
        try:
            value = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise ValueError("use none, bank or snapshot steps such as 250,500,1000") from None
    if isinstance(value, (list, tuple)):
        if not value or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in value):
            raise ValueError("trajectory steps must be positive snapshot steps, e.g. [250, 500, 1000]")
        if list(value) != sorted(set(value)):
            raise ValueError("trajectory steps must increase (the student follows the teacher's training)")
        return tuple(value)
    return value


PositiveInt = Annotated[int, Field(gt=0, strict=True)]
Student = Annotated[str, AfterValidator(_student)]
Teachers = Annotated[str, AfterValidator(_teachers)]
Smoothing = Annotated[float, Field(ge=0.0, lt=1.0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Seed = Annotated[int, Field(ge=0, strict=True)]
Step = Union[PositiveInt, Literal["weak", "strong", "bank"]]


class _Base(BaseModel):
    """The fixed part of a run (the KD terms' fields are added from the registry below)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    student: Student = Field("mlp_1", description="student architecture")
    teachers: Teachers = Field("none", description="teacher architectures joined by '+', e.g. cnn_1+inn_1, or none")
    teacher_step: Step | None = Field(None, description="snapshot step of each teacher: a number, weak, strong, "
                                                        "or 'bank' (all)")
    teacher_weight: Fraction = Field(0.5, description="mixing weight of the first of two teachers")
    teacher_label_smoothing: Smoothing = Field(0.0, description="label smoothing the teacher was trained with "
                                                                "(its own bank)")
    teacher_seed: Seed = Field(0, description="seed the teachers were trained with (one bank per seed)")
    alpha: Fraction = Field(0.5, description="weight of the hard-label CE term")
    label_smoothing: Smoothing = Field(0.0, description="label smoothing on the student's CE term")
    variant: Literal[tuple(VARIANTS)] | None = Field(  # type: ignore[valid-type]
        None, description="no_kd, normal_kd, type_1 or type_2 (sets which of s_kl, s_fm are zero)")
    seed: Seed = Field(0, description="student seed (initialization, batch order)")
    baseline: bool = Field(False, description="this trial is the study's no-KD baseline (set by the study)")
    views: Literal[("none", *view_names())] = Field(  # type: ignore[valid-type]
        "none", description="train on fixed views of the images (function matching; no teacher: the augmentation "
                            "control): " + ", ".join(view_names()) + " or none")
    views_k: Annotated[int, Field(ge=1, le=MAX_VIEWS_K, strict=True)] = Field(
        4, description="fixed views per training image (the teacher cache is views_k x a plain one)")
    views_seed: Seed = Field(0, description="seed the views are drawn from (the same for every student seed)")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="student learning rate: constant, or cosine (annealed to 0 over the run's steps; "
                                "patient training is this over more --max-epochs)")
    trajectory: Annotated[Union[Literal["none", "bank"], tuple[int, ...]], BeforeValidator(_trajectory)] = Field(
        "none", description="follow the teacher's snapshots, the one of an epoch growing linearly to teacher_step: "
                            "bank (every snapshot up to it), steps such as 250,1000, or none")

    @model_validator(mode="after")
    def _cross_field(self) -> "_Base":
        archs = [] if self.teachers == "none" else self.teachers.split("+")
        if len(set(archs)) != len(archs):
            raise ValueError(f"teachers={self.teachers!r} names a teacher twice")
        if len(archs) > 2:
            raise ValueError(f"teachers={self.teachers!r}: at most two teachers co-advise a student")
        for name in view_names():  # a view's own rules (erase_min <= erase_max), checked whether in use or not
            view_class(name)({hp.name: getattr(self, hp.name) for hp in view_class(name).hyperparams})
        return self


def _kd_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, cls in kd_terms().items():
        fields[scale_key(name)] = (Annotated[float, Field(ge=0.0)],
                                   Field(float(cls.default_scale), description=f"scale of the {name} term "
                                                                               f"({cls.summary})"))
    for key, hp in all_hyperparams().items():
        bound = {"gt" if hp.low_open else "ge": hp.low}
        if hp.high != float("inf"):
            bound["le"] = hp.high
        fields[key] = (Annotated[float, Field(**bound)], Field(hp.default, description=hp.help))
    for key, hp in view_hyperparams().items():
        bound = {"gt" if hp.low_open else "ge": hp.low}
        if hp.high != float("inf"):
            bound["le"] = hp.high
        fields[key] = (Annotated[float, Field(**bound)], Field(hp.default, description=hp.help))
    for arch in model_names("teacher"):
        fields[f"step_{arch}"] = (PositiveInt | None, Field(None, description=f"snapshot step of the {arch} teacher "
                                                                               f"(set per teacher by the searcher)"))
    return fields


def _registries() -> tuple:
    """What :class:`RunConfig`'s fields are generated from: teachers, KD terms, hyperparameters."""
    return tuple(model_names("teacher")), tuple(kd_terms()), tuple(all_hyperparams())


_MODEL: dict[str, Any] = {}
_ADAPTERS: dict[str, TypeAdapter] = {}


def run_config_model() -> Any:
    """The :class:`RunConfig` model for the registries as they are now.

    Plug-ins register teachers and KD terms after this module is imported (a ``--import``ed module,
    a space's ``imports:``, a pretrained teacher), and each adds fields (``step_<teacher>``,
    ``s_<term>``); the model is rebuilt when the registries changed, and is the same object otherwise.
    """
    key = _registries()
    if _MODEL.get("key") != key:
        _MODEL["model"] = create_model(
            "RunConfig", __base__=_Base, __doc__="A run's configuration: the study's keys, with types, bounds "
            "and defaults, plus each registered KD term's scale and hyperparameters.", **_kd_fields())
        _MODEL["key"] = key
        _ADAPTERS.clear()
    return _MODEL["model"]


def __getattr__(name: str) -> Any:
    """``RunConfig``: the model for the registries as they are now (see :func:`run_config_model`)."""
    if name == "RunConfig":
        return run_config_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def describe_keys() -> dict[str, str]:
    """Every key a space or ``--set`` may name, with what it means."""
    return {name: field.description or "" for name, field in run_config_model().model_fields.items()
            if not name.startswith("step_") and name != "baseline"}


def key_table() -> str:
    """``run_study.py --list-keys``: each key, its default, its range (numbers) and what it means."""
    rows = []
    for key, meaning in describe_keys().items():
        field = run_config_model().model_fields[key]
        bounds = range_text(key) if any(hasattr(m, a) for m in field.metadata for a in ("ge", "gt", "le", "lt")) else ""
        rows.append((key, repr(field.default), bounds, meaning))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{k:<{widths[0]}}  {d:<{widths[1]}}  {b:<{widths[2]}}  {m}" for k, d, b, m in rows)


BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def range_text(key: str) -> str:
    """A key's bounds as an interval, from its field's constraints: ``[0, 1]``, ``(0, 100]``, ``[0, inf)``."""
    bounds = {"low": -math.inf, "high": math.inf, "low_open": False, "high_open": False}
    for item in run_config_model().model_fields[key].metadata:
        for attr, side, is_open in (("ge", "low", False), ("gt", "low", True), ("le", "high", False),
                                    ("lt", "high", True)):
            if getattr(item, attr, None) is not None:
                bounds[side], bounds[f"{side}_open"] = getattr(item, attr), is_open
    return interval_text(**bounds)


def _describe(key: str, value: Any, error: dict) -> str:
    """One pydantic error as one line: ``alpha=1.5 is out of range [0, 1]``."""
    if error["type"] in BOUND_ERRORS and key in run_config_model().model_fields:
        return f"{key}={value!r} is out of range {range_text(key)}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}={value!r}: {message}" if key else message


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
    if first["type"] == "extra_forbidden":
        return f"unknown key {where!r}; valid keys: {', '.join(describe_keys())}"
    return _describe(where, first.get("input"), first)




def check_value(key: str, value: Any) -> Any:
    """Validate one key's value (a space's fixed value, a range bound, a choice, a ``--set``);
    returns it as the run will see it, or raises :class:`ConfigError` with a one-line message."""
    fields = run_config_model().model_fields
    if key not in fields:
        raise ConfigError(f"unknown key {key!r}; valid keys: {', '.join(describe_keys())}")
    if key not in _ADAPTERS:
        field = fields[key]
        _ADAPTERS[key] = TypeAdapter(Annotated[field.annotation, *field.metadata] if field.metadata
                                     else field.annotation)
    try:
        return _ADAPTERS[key].validate_python(value)
    except ValidationError as error:
        raise ConfigError(_describe(key, value, error.errors()[0])) from None


def validate_run(config: Mapping[str, Any]) -> Any:
    """A trial's config (sampled and constant values) as a :class:`RunConfig`; the searcher's
    bookkeeping (the ``arm`` it picked, Optuna's ``<scale>_on`` switches) is dropped first."""
    try:  # models named by a scheme register first: their step_<name> keys are fields from then on
        for name in [str(config.get("student", ""))] + str(config.get("teachers", "")).split("+"):
            _resolve(name)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    values = {k: v for k, v in config.items()
              if k not in SEARCH_BOOKKEEPING and not (k.endswith("_on") and k[:-3] in run_config_model().model_fields)}
    try:
        return run_config_model().model_validate(values)
    except ValidationError as error:
        raise ConfigError(_one_line(error)) from None


def loss_config(run: Any) -> LeveledKDConfig:
    """The leveled loss a validated run asks for; ``variant`` switches s_kl / s_fm on or off."""
    values = run.model_dump()
    if run.variant is not None:
        on_kl, on_fm = VARIANTS[run.variant]
        explicit = run.model_fields_set
        values["s_kl"] = on_kl * (run.s_kl if "s_kl" in explicit else 1.0)
        values["s_fm"] = on_fm * (run.s_fm if "s_fm" in explicit else 1.0)
    try:
        return LeveledKDConfig.from_flat(values)
    except ValueError as error:
        raise ConfigError(str(error)) from None


# ----------------------------------------------------------------------------- config -> run

def run_spec(config: dict[str, Any], *, dataset: str, epochs: int, train_subset: int | None) -> RunSpec:
    """Turn a trial's config (sampled + constant values) into the run it describes, validated
    against :class:`RunConfig` (an unknown key or a value out of range is an error)."""
    run = validate_run(config)
    archs = [] if run.teachers == "none" else run.teachers.split("+")
    if len(archs) == 2 and "teacher_weight" in run.model_fields_set:
        weights = [run.teacher_weight, 1.0 - run.teacher_weight]
    else:
        weights = [1.0] * len(archs)
    refs = []
    for arch, weight in zip(archs, weights):
        step = _teacher_step(run, arch)
        refs.append(TeacherRef(arch, step, weight, run.teacher_seed, trajectory_steps(run.trajectory, step)))
    spec = RunSpec(dataset=dataset, student=run.student, teachers=tuple(refs), loss=loss_config(run),
                   teacher_label_smoothing=run.teacher_label_smoothing, epochs=epochs, seed=run.seed,
                   train_subset=train_subset, views=view_set(run), lr_schedule=run.lr_schedule)
    _check_jacobian(spec)
    return spec


def _check_jacobian(spec: RunSpec) -> None:
    """Jacobian matching reads the teacher's derivatives on the training images themselves, cached per
    snapshot: it combines with neither views nor a trajectory, and its K and seed are whole numbers."""
    if not spec.loss_config.uses_jvp:
        return
    for key in ("jacobian_k", "jacobian_seed"):
        if not float(spec.loss.hparams[key]).is_integer():
            raise ConfigError(f"{key}={spec.loss.hparams[key]:g} must be a whole number")
    if spec.views is not None:
        raise ConfigError("s_jacobian > 0 does not combine with views (the teacher's derivatives are cached on the "
                          "training images, not on views): set views=none or s_jacobian=0")
    if any(ref.trajectory for ref in spec.teachers):
        raise ConfigError("s_jacobian > 0 does not combine with a trajectory (its derivatives are cached for one "
                          "snapshot): set trajectory=none or s_jacobian=0")


def trajectory_steps(trajectory: Any, step: int) -> tuple[int, ...]:
    """The snapshot steps a teacher at ``step`` is followed through, ending at ``step`` (added when
    a list stops short of it): ``bank`` is the study's snapshot schedule up to ``step``; () for none."""
    if trajectory == "none":
        return ()
    if trajectory == "bank":
        steps = tuple(snapshot_steps(step))
        return steps if steps and steps[-1] == step else (*steps, step)
    late = [s for s in trajectory if s > step]
    if late:
        raise ConfigError(f"trajectory={','.join(map(str, trajectory))}: step {late[0]} is after the teacher's "
                          f"snapshot {step}, where the trajectory ends")
    return tuple(trajectory) if trajectory[-1] == step else (*trajectory, step)


def view_set(run: Any) -> ViewSet | None:
    """The fixed views a validated run trains on (None for ``views=none``); only the chosen view's
    parameters are part of it, so another view's keys never change its teacher cache."""
    if run.views == "none":
        return None
    own = {hp.name: getattr(run, hp.name) for hp in view_class(run.views).hyperparams}
    return ViewSet.create(run.views, run.views_k, run.views_seed, **own)


def _teacher_step(run: Any, arch: str) -> int:
    step = getattr(run, f"step_{arch}")
    if step is None:
        step = run.teacher_step if isinstance(run.teacher_step, int) else None
    if step is None:
        raise ConfigError(f"teacher {arch} needs a snapshot step (step_{arch} or teacher_step)")
    return step
