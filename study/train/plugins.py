"""A user's own modules, imported by path or by name, in the driver and in every Ray worker.

Why: datasets, models and KD terms are plug-ins that register themselves when their module is
imported (``@register_dataset``, ``@register_model``, ``@register_kd_term``), so a user's study
lives in their own files and never edits the package. ``--import FILE_OR_MODULE`` and a space's
``imports:`` name those modules. A Ray worker is a fresh Python process whose registries hold only
the shipped entries, so every worker-side entry point (a teacher task, a trial) calls
:func:`import_plugins` with the study's list before it builds anything; importing is idempotent.

A file is imported under its stem as module name (``my_models.py`` -> ``my_models``), with its
folder on ``sys.path`` so that it can import its siblings; a name already taken by another module
is refused, in one line, rather than shadowed. Paths are resolved to absolute ones up front: on a
multi-node cluster they must be on storage every node reads.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

from study.errors import UserError


#: file plug-ins imported in this process: module name -> file (what a logged model must carry along)
_FILES: dict[str, str] = {}


class PluginError(UserError, ImportError):
    """A plug-in module is missing, its name is taken, or importing it failed; the message says where."""


def is_path(spec: str) -> bool:
    """``my_models.py`` or ``plugins/x`` is a file; ``my_package.models`` is a module name."""
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def resolve_plugin(spec: str, base: str | os.PathLike | None = None) -> str:
    """``spec`` as it is imported anywhere: a file as an absolute path (relative ones against
    ``base``, a space file's folder, else the working directory), a module name as it is."""
    spec = str(spec).strip()
    if not spec:
        raise PluginError("an empty plug-in name; give a .py file or a module name")
    if not is_path(spec):
        return spec
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = Path(base or ".") / path
    return str(path.resolve())


def _where(error: BaseException, path: str | None) -> str:
    """``file:line`` of the innermost frame in the plug-in's own file (else the innermost frame)."""
    frames = traceback.extract_tb(error.__traceback__)
    if isinstance(error, SyntaxError) and error.filename:
        return f"{error.filename}:{error.lineno}"
    mine = [f for f in frames if path and os.path.abspath(f.filename) == path] or frames
    return f"{mine[-1].filename}:{mine[-1].lineno}" if mine else "?"


def _failed(spec: str, error: BaseException, path: str | None = None) -> PluginError:
    if isinstance(error, UserError):
        text = str(error)
    else:
        first = (str(error).strip().splitlines() or [""])[0]
        text = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return PluginError(f"importing plug-in {spec} failed: {text} (at {_where(error, path)})")


def import_plugin(spec: str, base: str | os.PathLike | None = None) -> str:
    """Import one plug-in (a .py file or a module name); returns its module name. Idempotent."""
    spec = resolve_plugin(spec, base)
    if not is_path(spec):
        if spec in sys.modules:
            return spec
        try:
            importlib.import_module(spec)
        except ModuleNotFoundError as error:
            if error.name and (spec == error.name or spec.startswith(error.name + ".")):
                raise PluginError(f"plug-in module {spec!r} not found on sys.path (give a .py file instead, "
                                  f"or run from the folder that holds it)") from None
            raise _failed(spec, error) from None
        except Exception as error:
            raise _failed(spec, error) from None
        return spec
    path = Path(spec)
    if not path.is_file():
        raise PluginError(f"plug-in file {path} does not exist")
    if path.suffix != ".py":
        raise PluginError(f"plug-in file {path} is not a .py file")
    name = path.stem
    known = sys.modules.get(name)
    if known is not None:
        if os.path.abspath(getattr(known, "__file__", "") or "") == str(path):
            _FILES.setdefault(name, str(path))
            return name
        raise PluginError(f"plug-in file {path}: a module named {name!r} is already imported (from "
                          f"{getattr(known, '__file__', None) or 'built-ins'}); rename the file")
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)  # its siblings import; appended, so it never shadows an installed module
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException as error:
        del sys.modules[name]
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        raise _failed(str(path), error, str(path)) from None
    _FILES[name] = str(path)
    return name


def plugin_files(classes: Iterable[type]) -> list[str]:
    """The plug-in files that define ``classes`` (e.g. a user's student inside a logged model): what
    an MLflow model needs beside it (``code_paths``) to load where the plug-in was never imported."""
    return sorted({_FILES[c.__module__] for c in classes if c.__module__ in _FILES})


def import_plugins(specs: Iterable[str], base: str | os.PathLike | None = None) -> list[str]:
    """Import every plug-in of ``specs`` in order (see :func:`import_plugin`); returns their module names."""
    return [import_plugin(spec, base) for spec in specs or ()]


def resolve_plugins(specs: Sequence[str] | None, base: str | os.PathLike | None = None) -> tuple[str, ...]:
    """``specs`` resolved (:func:`resolve_plugin`), duplicates dropped, order kept."""
    return tuple(dict.fromkeys(resolve_plugin(spec, base) for spec in specs or ()))


# ----------------------------------------------------------------------------- registrations

class Registration(Protocol):
    """Something a space registers (a ``models:`` entry, a pretrained teacher) that every worker
    registers again: a picklable value whose ``register()`` is idempotent."""

    def register(self) -> Any: ...


#: The keys of a space's ``models:`` entry.
MODEL_OPTIONS = ("model", "roles", "features", "outputs")


@dataclass(frozen=True)
class ModelEntry:
    """A space's ``models: {NAME: {model: SPEC, roles, features, outputs}}`` entry: the model ``SPEC``
    names (``torchvision:ARCH``, ``timm:ARCH``, ``module.path:Attribute``) registered as ``NAME``."""

    name: str
    spec: str
    roles: tuple[str, ...] = ("teacher", "student")
    features: str | None = None
    outputs: str = "auto"

    def register(self) -> str:
        from models.hub import register_model_spec
        from models.registry import model_names, unregister_model

        if _ENTRIES.get(self.name) == self and self.name in model_names():
            return self.name  # a worker's second time, a space loaded again
        if self.name in _ENTRIES:
            unregister_model(self.name)  # the same name with another spec: the later wins
        try:
            register_model_spec(self.name, self.spec, self.roles, self.features, self.outputs)
        except (ImportError, ValueError) as error:
            raise PluginError(f"model {self.name!r} ({self.spec}): {str(error).splitlines()[0]}") from None
        _ENTRIES[self.name] = self
        return self.name


#: the models: entries registered in this process, by name
_ENTRIES: dict[str, ModelEntry] = {}


def parse_model_entry(name: str, raw: Any) -> ModelEntry:
    """One entry of a space's ``models:`` section (a one-line PluginError when malformed)."""
    if isinstance(raw, str):
        raw = {"model": raw}
    if not isinstance(raw, Mapping) or not isinstance(raw.get("model"), str) or ":" not in raw["model"]:
        raise PluginError(f"model {name!r} needs model: torchvision:ARCH, timm:ARCH or module.path:Attribute")
    unknown = sorted(set(raw) - set(MODEL_OPTIONS))
    if unknown:
        raise PluginError(f"model {name!r} has unknown option(s) {unknown}; valid: {', '.join(MODEL_OPTIONS)}")
    roles = raw.get("roles", ["teacher", "student"])
    roles = [roles] if isinstance(roles, str) else roles
    if not isinstance(roles, list) or not roles or not set(roles) <= {"teacher", "student"}:
        raise PluginError(f"model {name!r}: roles must be a list of teacher and/or student, got {raw.get('roles')!r}")
    outputs = raw.get("outputs", "auto")
    if outputs not in ("auto", "logits", "model_output"):
        raise PluginError(f"model {name!r}: outputs must be auto, logits or model_output, got {outputs!r}")
    features = raw.get("features")
    if features is not None and not isinstance(features, str):
        raise PluginError(f"model {name!r}: features names a layer (e.g. layer4), got {features!r}")
    return ModelEntry(name, raw["model"], tuple(roles), features, outputs)


def prepare_worker(plugins: Sequence[str] = (), registrations: Sequence[Registration] = ()) -> None:
    """What a Ray worker (a teacher task, a trial) does first: import the study's plug-ins, then
    register what its space registered, so its registries hold what the driver's hold."""
    import_plugins(plugins)
    for registration in registrations:
        registration.register()
