"""The single source of truth for what a backend name means.

A name is resolved, in this order, as
  1. a built-in (`numpy`, `numba-loops`, `numba`, `torch-cpu`, ...),
  2. a plugin registered under the entry-point group `qkbench.backends`,
  3. an import path `"package.module:ClassName"` (any string with a colon).
Plugins may not shadow built-ins: such an entry point is reported as broken and ignored.
Everything is validated here, before anything is run or stored.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from qkbench.backends.base import ATTENTION_FEATURES, DEVICES, KNOWN_DTYPES, Backend
from qkbench.errors import UsageError

ENTRY_POINT_GROUP = "qkbench.backends"
LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")

# Import paths, not classes: listing names must not import torch or numba.
BUILTINS: dict[str, str] = {
    "numpy": "qkbench.backends.numpy_backend:NumpyBackend",
    "numba-loops": "qkbench.backends.numba_backend:NumbaLoopsBackend",
    "numba": "qkbench.backends.numba_backend:NumbaBackend",
    "torch-cpu": "qkbench.backends.torch_backend:TorchCpuBackend",
    "torch-cuda": "qkbench.backends.torch_backend:TorchCudaBackend",
    "torch-cuda-tf32": "qkbench.backends.torch_backend:TorchCudaTf32Backend",
    "torch-mps": "qkbench.backends.torch_backend:TorchMpsBackend",
    "cupy": "qkbench.backends.cupy_backend:CupyBackend",
    "cupy-tf32": "qkbench.backends.cupy_backend:CupyTf32Backend",
    "jax-cpu": "qkbench.backends.jax_backend:JaxCpuBackend",
    "jax-cuda": "qkbench.backends.jax_backend:JaxCudaBackend",
    "torch-compile-cpu": "qkbench.backends.torch_compile_backend:TorchCompileCpuBackend",
    "torch-compile-cuda": "qkbench.backends.torch_compile_backend:TorchCompileCudaBackend",
    "triton": "qkbench.backends.triton_backend:TritonBackend",
    "numba-cuda": "qkbench.backends.numba_cuda_backend:NumbaCudaBackend",
}


@dataclass(frozen=True)
class BackendSpec:
    """A resolved backend: where its class lives, and how the config refers to it."""

    label: str  # the name used in tables ("numpy", or a config-given label)
    path: str  # "package.module:ClassName", importable in a worker process
    origin: str  # "builtin", "plugin" or "import path"
    options: tuple[tuple[str, Any], ...] = ()

    def create(self) -> Backend:
        return load_class(self.path)(**dict(self.options))


def plugin_entry_points() -> dict[str, str]:
    """Entry-point plugins as {name: import path}, without importing them."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_backends() -> list[tuple[str, str, str]]:
    """(name, import path, origin) for every built-in and every plugin, built-ins first."""
    found = [(name, path, "builtin") for name, path in BUILTINS.items()]
    for name, path in sorted(plugin_entry_points().items()):
        origin = "plugin (ignored: shadows a built-in)" if name in BUILTINS else "plugin"
        found.append((name, path, origin))
    return found


def load_class(path: str) -> type:
    """Import "package.module:ClassName" and check it looks like a backend."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise UsageError(f"backend path {path!r} must look like 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure is the plugin's, not ours
        raise UsageError(f"cannot import backend module {module_name!r}: "
                         f"{type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise UsageError(f"module {module_name!r} has no class {class_name!r}")
    if not isinstance(cls, type) or not callable(getattr(cls, "scores", None)):
        raise UsageError(f"{path!r} is not a backend class (it needs a scores(q, k) method)")
    return with_default_hooks(cls, path)


def with_default_hooks(cls: type, path: str) -> type:
    """A backend class that has every member of the protocol: `cls` itself when it subclasses
    `Backend`, else a subclass that puts `Backend` after it in the method order. A plugin
    written to the protocol without the base class then gets each optional hook's documented
    default (cleanup, load, telemetry, ...) from the one place that defines them, instead of an
    AttributeError in every cell; whatever it defines itself still comes first."""
    if issubclass(cls, Backend):
        return cls
    try:
        return type(cls.__name__, (cls, Backend), {"__module__": cls.__module__,
                                                   "__qualname__": cls.__qualname__})
    except TypeError as exc:  # a metaclass or layout conflict (slots, a C base)
        raise UsageError(f"{path!r} does not subclass qkbench.Backend and cannot take its "
                         f"default hooks ({exc}); subclass qkbench.Backend") from None


def resolve(name: str, label: str | None = None, options: dict[str, Any] | None = None
            ) -> BackendSpec:
    """Turn a config's backend entry into a validated spec, or raise UsageError."""
    if name in BUILTINS:
        path, origin = BUILTINS[name], "builtin"
    elif ":" in name:
        path, origin = name, "import path"
    elif name in (plugins := plugin_entry_points()):
        path, origin = plugins[name], "plugin"
    else:
        known = ", ".join(n for n, _, o in known_backends() if o in ("builtin", "plugin"))
        raise UsageError(f"unknown backend {name!r} (known: {known}; "
                         "or give 'package.module:ClassName')")
    cls = load_class(path)
    spec = BackendSpec(label=label or _class_name(cls, name), path=path, origin=origin,
                       options=tuple(sorted((options or {}).items())))
    if not LABEL_PATTERN.fullmatch(spec.label):
        # Labels name rows, figures and files: nothing that could form a path or break a table.
        raise UsageError(f"backend name {spec.label!r} must be letters, digits and . _ + - "
                         "(give it a 'label')")
    if origin != "builtin" and spec.label in BUILTINS:
        raise UsageError(f"{name!r} calls itself {spec.label!r}, a built-in name; plugins may not "
                         "shadow built-ins (give it another 'label')")
    check_backend_class(cls, spec.label)
    try:
        spec.create()
    except TypeError as exc:  # unknown or missing constructor options
        raise UsageError(f"backend {spec.label!r}: bad options: {exc}") from None
    except Exception as exc:
        raise UsageError(f"backend {spec.label!r}: constructor failed: "
                         f"{type(exc).__name__}: {exc}") from None
    return spec


def _class_name(cls: type, given: str) -> str:
    declared = getattr(cls, "name", "")
    if isinstance(declared, str) and declared:
        return declared
    return cls.__name__ if ":" in given else given


def check_backend_class(cls: type, label: str) -> None:
    """Reject declarations the harness could not honour, before any cell runs."""
    device = getattr(cls, "device", "cpu")
    if device not in DEVICES:
        raise UsageError(f"backend {label!r}: device must be one of {DEVICES}, got {device!r}")
    dtypes = getattr(cls, "dtypes", ())
    if isinstance(dtypes, str) or not all(d in KNOWN_DTYPES for d in dtypes):
        raise UsageError(f"backend {label!r}: dtypes must be a tuple drawn from "
                         f"{KNOWN_DTYPES}, got {dtypes!r}")
    attention = getattr(cls, "attention", frozenset())
    if isinstance(attention, str) or not all(f in ATTENTION_FEATURES for f in attention):
        raise UsageError(f"backend {label!r}: attention must be a set drawn from "
                         f"{ATTENTION_FEATURES}, got {attention!r}")
