"""In the main process: the run's environments (the environments axis of a sweep).

Before any cell runs, each environment's interpreter is asked what it has: its qkbench and the
version of the worker protocol that qkbench speaks, how each backend of the sweep looks there
(device, dtypes, attention features — or why it cannot be imported), and its fingerprint
(interpreter, library versions, BLAS, qkbench version and the git commit of the code it
imports). An interpreter that cannot be run, that lacks qkbench, or whose qkbench speaks
another protocol is refused with one line (`UsageError`, exit 2); a backend it lacks leaves
that backend's cells of the environment `skipped`, with the reason.

Workers of an environment are started as `PYTHON -c ...` with the pipe's end inherited (see
`qkbench.measure.worker.serve`): the interpreter is run as given, so a virtual environment's
python, a wrapper script and a pyenv shim all work, and the worker imports that environment's
own qkbench and backends, not this process's.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qkbench.errors import UsageError
from qkbench.measure.worker import PROTOCOL_VERSION

# Importing qkbench and fingerprinting takes a second or two; a couple of minutes is stuck.
PROBE_TIMEOUT_S = 120.0
_MARK = "QKBENCH-ENVIRONMENT-PROBE "

# Run by each environment's interpreter, whatever qkbench version it has: it only reads
# attributes that may be missing, and prints one marked line of JSON last (a wrapper script
# may print before it).
_PROBE = r"""
import json, sys
out = {"executable": sys.executable, "python": "%d.%d.%d" % sys.version_info[:3]}
try:
    import qkbench
except Exception as exc:
    out["error"] = "%s: %s" % (type(exc).__name__, (str(exc).strip().splitlines() or [""])[0])
else:
    out["qkbench_version"] = getattr(qkbench, "__version__", None)
    out["qkbench_file"] = getattr(qkbench, "__file__", None)
    try:
        from qkbench.measure import worker
        out["protocol"] = getattr(worker, "PROTOCOL_VERSION", None)
    except Exception:
        out["protocol"] = None
    try:
        from qkbench.machine.environment import fingerprint
        out["fingerprint"] = fingerprint()
    except Exception as exc:
        out["fingerprint"] = {"error": "%s: %s" % (type(exc).__name__, exc)}
    backends = {}
    if out["protocol"] == int(sys.argv[1]):
        from qkbench.backends.registry import load_class
        for path in json.loads(sys.argv[2]):
            try:
                cls = load_class(path)
                backends[path] = {"device": cls.device, "dtypes": list(cls.dtypes),
                                  "attention": sorted(getattr(cls, "attention", ()))}
            except BaseException as exc:
                text = str(exc).strip().splitlines()
                backends[path] = {"missing": type(exc).__name__ + (": " + text[0] if text else "")}
    out["backends"] = backends
sys.stdout.write("\n__MARK__" + json.dumps(out, default=str) + "\n")
""".replace("__MARK__", _MARK)

# How a worker starts in an environment: its qkbench's own entry point. Ctrl-C goes to the
# whole process group, and the main process decides what stops: ignored from the first line,
# before the imports (worker_main ignores it too, once it runs).
_WORKER = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); import sys; "
           "from qkbench.measure.worker import serve; serve(int(sys.argv[1]))")


@dataclass
class Environment:
    """One environment of the run, once its interpreter has answered the probe."""

    name: str
    python: str  # as given: run as is, never resolved (a venv's python is a symlink)
    variables: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # the probe's answer

    def process_environment(self) -> dict[str, str]:
        """The OS environment its processes start with: this one's, its variables, and its
        import paths before PYTHONPATH."""
        variables = {**os.environ, **self.variables}
        if self.paths:
            before = variables.get("PYTHONPATH", "")
            variables["PYTHONPATH"] = os.pathsep.join([*self.paths, *([before] if before else [])])
        return variables

    def start(self, child_fd: int) -> EnvironmentProcess:
        """Start a worker in this environment, holding `child_fd` (its end of the pipe)."""
        process = subprocess.Popen([self.python, "-c", _WORKER, str(child_fd)],
                                   pass_fds=(child_fd,), env=self.process_environment())
        return EnvironmentProcess(process)

    def backend(self, path: str) -> dict[str, Any]:
        """How a backend class looks here: device, dtypes, attention; or {'missing': why}."""
        return dict(self.facts.get("backends", {}).get(path)
                    or {"missing": "the environment was not asked about it"})

    def meta(self) -> dict[str, Any]:
        """What meta.json keeps of it (`environments` → name → this)."""
        return {"python": self.python, "variables": dict(self.variables),
                "paths": list(self.paths), "executable": self.facts.get("executable"),
                "qkbench_version": self.facts.get("qkbench_version"),
                "qkbench_file": self.facts.get("qkbench_file"),
                "protocol": self.facts.get("protocol"),
                "fingerprint": self.facts.get("fingerprint") or {}}


class EnvironmentProcess:
    """A worker started in another interpreter, with the part of multiprocessing.Process's
    interface that `WorkerHandle` uses."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def exitcode(self) -> int | None:
        return self._process.poll()  # negative for a signal, as multiprocessing's

    def is_alive(self) -> bool:
        return self._process.poll() is None

    def join(self, timeout: float | None = None) -> None:
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        if self.is_alive():
            self._process.kill()


def probe(entries: Sequence[Any], backend_paths: Sequence[str]) -> dict[str, Environment]:
    """Ask every environment (a config's `environments` entries) what it has, all at once;
    raise UsageError, one line, for the first that cannot run this run's workers."""
    paths = json.dumps(list(dict.fromkeys(backend_paths)))
    started: list[tuple[Environment, subprocess.Popen[str] | str]] = []
    for entry in entries:
        environment = Environment(entry.name, entry.python, dict(entry.env), list(entry.paths))
        try:
            process: subprocess.Popen[str] | str = subprocess.Popen(
                [entry.python, "-c", _PROBE, str(PROTOCOL_VERSION), paths],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=environment.process_environment())
        except FileNotFoundError:
            process = f"its interpreter {entry.python} was not found"
        except PermissionError:
            process = f"its interpreter {entry.python} cannot be run (permission denied)"
        except OSError as exc:
            process = f"its interpreter {entry.python} cannot be run ({exc.strerror})"
        started.append((environment, process))
    try:
        for environment, process in started:
            environment.facts = _answer(environment, process)
    finally:
        for _, process in started:
            if not isinstance(process, str) and process.poll() is None:
                process.kill()
                process.wait()
    return {environment.name: environment for environment, _ in started}


def _answer(environment: Environment, process: subprocess.Popen[str] | str) -> dict[str, Any]:
    where = f"environment {environment.name}"
    if isinstance(process, str):
        raise UsageError(f"{where}: {process}")
    try:
        out, err = process.communicate(timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UsageError(f"{where}: {environment.python} did not answer within "
                         f"{PROBE_TIMEOUT_S:g} s") from None
    answers = [line[len(_MARK):] for line in out.splitlines() if line.startswith(_MARK)]
    if not answers:
        last = (err.strip().splitlines() or [f"exit code {process.returncode}"])[-1]
        raise UsageError(f"{where}: {environment.python} failed: {last.strip()}")
    facts: dict[str, Any] = json.loads(answers[-1])
    if "error" in facts:
        raise UsageError(f"{where}: {environment.python} cannot import qkbench "
                         f"({facts['error']})")
    if facts.get("protocol") != PROTOCOL_VERSION:
        theirs = facts.get("protocol")
        spoken = (f"worker protocol {theirs}" if theirs is not None
                  else "no versioned worker protocol (it predates it)")
        raise UsageError(f"{where}: its qkbench {facts.get('qkbench_version')} speaks {spoken}, "
                         f"this qkbench {_own_version()} speaks worker protocol "
                         f"{PROTOCOL_VERSION}; install one version in both")
    return facts


def _own_version() -> str:
    from qkbench.version import __version__

    return __version__


def differences(environments: Mapping[str, Environment]) -> list[str]:
    """How the environments' fingerprints differ from the first one's, as 'name: field: A vs B'
    lines (what a paired comparison measures, so shown rather than refused)."""
    from qkbench.machine.environment import differences as fingerprint_differences

    items = list(environments.values())
    if not items:
        return []
    first = items[0]
    return [f"{other.name}: {line}" for other in items[1:]
            for line in fingerprint_differences(first.facts.get("fingerprint") or {},
                                                other.facts.get("fingerprint") or {})]
