"""The sections of a space file that bring the user's own parts: ``imports``, ``dataset``, ``models``,
``robustness`` and ``pretrained`` (docs/byo.md).

Why apart from :mod:`study.search.space`: these sections *register* things (plug-in modules, an
image folder, named models, teachers trained elsewhere) before the space's own keys are checked,
since those keys may name what they register. The space module then deals only with what is
searched; this one with where the parts come from, and with ``--list-keys --space FILE``'s table
of what they made available.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.errors import SpaceError
from study.teachers.pretrained import PretrainedTeacher, parse_pretrained, register_pretrained
from study.train.datasets import register_image_folder, resolve_dataset
from study.train.plugins import ModelEntry, import_plugins, parse_model_entry, resolve_plugins
from study.train.robustness import get_family

#: The options of a space's ``dataset: {image_folder: ...}``.
DATASET_OPTIONS = ("image_folder", "name", "resize", "mean", "std", "test_fraction", "shift_magnitudes")


@dataclass(frozen=True)
class OwnParts:
    """What a space's own-parts sections registered."""

    #: plug-in modules (absolute paths or module names): every Ray worker imports them too
    imports: tuple[str, ...] = ()
    #: the dataset the space names (a registered name), or None: ``--dataset``'s default then
    dataset: str | None = None
    models: tuple[ModelEntry, ...] = ()
    robustness: tuple[str, ...] = ()
    pretrained: tuple[PretrainedTeacher, ...] = ()


def bring_own_parts(name: str, raw: dict, base: str | Path | None) -> OwnParts:
    """Import the space's plug-ins, then register its dataset, models and pretrained teachers, in that
    order (a dataset or a model may come from a plug-in); paths are relative to ``base``."""
    imports = raw.get("imports") or []
    if isinstance(imports, str):
        imports = [imports]
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise SpaceError(f"space {name!r}: imports must be a list of .py files or module names")
    imports = resolve_plugins(imports, base)
    import_plugins(imports)
    dataset = space_dataset(name, raw.get("dataset"), base)
    models = raw.get("models") or {}
    if not isinstance(models, dict):
        raise SpaceError(f"space {name!r}: models must map each model's name to its model: spec")
    entries = tuple(parse_model_entry(str(k), v) for k, v in models.items())
    for entry in entries:
        entry.register()
    families = raw.get("robustness") or []
    families = [families] if isinstance(families, str) else families
    if not isinstance(families, list):
        raise SpaceError(f"space {name!r}: robustness must be a list of family names, e.g. [rotation, noise]")
    families = tuple(dict.fromkeys(get_family(str(f)).name for f in families if str(f) != "translation"))
    pretrained = raw.get("pretrained") or {}
    if not isinstance(pretrained, dict):
        raise SpaceError(f"space {name!r}: pretrained must map each teacher's name to its source")
    teachers = tuple(register_pretrained(parse_pretrained(str(k), v, base)) for k, v in pretrained.items())
    return OwnParts(tuple(imports), dataset, entries, families, teachers)


def space_dataset(space: str, raw: Any, base: str | Path | None) -> str | None:
    """A space's ``dataset:``: a registered name, or ``{image_folder: PATH, name, resize, mean, std}``
    (registered here, the path relative to ``base``)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        if "/" in raw and ":" not in raw:
            raw = {"image_folder": raw}
        else:
            return resolve_dataset(raw)  # a registered name, torchvision:CLASS, module:function; else one line
    if not isinstance(raw, dict) or "image_folder" not in raw:
        raise SpaceError(f"space {space!r}: dataset must be a registered name or {{image_folder: PATH, name: NAME}}")
    unknown = sorted(set(raw) - set(DATASET_OPTIONS))
    if unknown:
        raise SpaceError(f"space {space!r}: dataset has unknown option(s) {unknown}; valid: "
                         f"{', '.join(DATASET_OPTIONS)}")
    folder = Path(str(raw["image_folder"])).expanduser()
    folder = folder if folder.is_absolute() else Path(base or ".") / folder
    for option in ("resize", "mean", "std", "shift_magnitudes"):
        value = raw.get(option)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, (int, float)) for v in value)):
            raise SpaceError(f"space {space!r}: dataset {option} must be a list of numbers, got {value!r}")
    fraction = raw.get("test_fraction")
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))):
        raise SpaceError(f"space {space!r}: dataset test_fraction must be a number in (0, 1), got {fraction!r}")
    return register_image_folder(str(raw.get("name") or folder.resolve().name), folder, raw.get("resize"),
                                 raw.get("mean"), raw.get("std"), test_fraction=fraction,
                                 shift_magnitudes=raw.get("shift_magnitudes"))


def registered_table(space: Any) -> str:
    """``--list-keys --space FILE``: what ``space`` (a :class:`~study.search.space.Space`, which imports
    this module) may name once its plug-ins are imported:
    datasets, students, teachers and pretrained teachers, and what the space itself brings."""
    from models import model_names

    from study.teachers.pretrained import pretrained_names
    from study.train.datasets import dataset_entry, dataset_names

    pretrained = set(pretrained_names())
    rows = [("datasets", ", ".join(dataset_names())),
            ("students", ", ".join(model_names("student"))),
            ("teachers", ", ".join(n for n in model_names("teacher") if n not in pretrained)),
            ("pretrained", ", ".join(sorted(pretrained)) or "none")]
    mine = [(f"space {space.name}", f"dataset {space.dataset or '(none: --dataset, else mnist)'}, students "
                                    f"{', '.join(space.students())}, teachers {', '.join(space.teacher_archs()) or 'none'}")]
    if space.imports:
        mine.append(("imports", ", ".join(space.imports)))
    if space.dataset:
        mine.append((f"dataset {space.dataset}", dataset_entry(space.dataset).description))
    mine += [(f"model {m.name}", f"{m.spec} ({', '.join(m.roles)}; features: {m.features or 'its head input'})")
             for m in space.models]
    mine += [(f"pretrained {t.name}", t.describe()) for t in space.pretrained]
    if space.robustness:
        mine.append(("robustness", ", ".join(["translation (objective)", *space.robustness])))
    width = max(len(k) for k, _ in rows + mine)
    return "\n".join(f"{k:<{width}}  {v}".rstrip() for k, v in rows + [("", "")] + mine)
