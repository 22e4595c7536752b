"""Bad input never gets past the command line: exit code 2 and one line that names the problem.

The contract (DESIGN.md, "Command line"): a request that is itself wrong (bad config, bad flag,
missing file) exits with 2 and writes exactly one line to stderr, `qkbench: error: ...`, never a
traceback; a config error names its key path. Good configs validate with exit 0 and say how many
cells they expand to.

Every case runs the real CLI (`python -m qkbench`) in a process of its own, because a traceback
or a stray line only shows there. A fresh interpreter costs about 0.6 s of CPU before the CLI
reads its arguments (pydantic, NumPy), so one session fixture runs every case through
tests/forked_cli.py: a server imports what `python -m qkbench` imports first and forks a child
per case, which runs the package's `__main__` with its own argv, stdout, stderr and exit status;
`test_forked_cases_match_fresh_processes` holds it to the same outcome as a fresh interpreter.
Every bad config goes through `validate`; `run` shares the same loading code up to the refusal,
so it gets the sample in RUN_SAMPLE (every kind of problem once, every security-relevant one)
instead of all of them.

The corpus lives in tests/configs/bad (one problem per file, the file name says which) and
tests/configs/good; the tables below must list exactly the files there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.forked_cli import run_many

REPO = Path(__file__).resolve().parent.parent
BAD_DIR = REPO / "tests" / "configs" / "bad"
GOOD_DIR = REPO / "tests" / "configs" / "good"
PREFIX = "qkbench: error: "

# File in tests/configs/bad → a piece of the error line that names the problem (for config
# errors, the key path).
BAD = {
    # YAML that does not parse, or that asks for more than plain data
    "yaml_bad_indentation.yaml": "invalid YAML at line 4",
    "yaml_unclosed_bracket.yaml": "invalid YAML at line 4",
    "yaml_tab_indentation.yaml": "invalid YAML at line 3",
    "yaml_two_documents.yaml": "invalid YAML at line 6",
    "yaml_undefined_alias.yaml": "undefined alias 'sizes'",
    "yaml_unhashable_key.yaml": "unhashable key",
    "yaml_duplicate_top_key.yaml": "duplicate key 'name'",
    "yaml_duplicate_sweep_key.yaml": "duplicate key 'n'",
    "yaml_deeply_nested.yaml": "nested too deeply",
    "yaml_alias_bomb_in_flag.yaml": "sweep.causal: expected true, false or a list of them; "
                                    "got {'l0': ['lol', 'lol', 'lol', 'lol', ...], 'l1':",
    "yaml_tag_python_object_apply.yaml": "python/object/apply:os.system",
    "yaml_tag_python_object_new.yaml": "python/object/new:subprocess.check_output",
    "yaml_tag_python_name.yaml": "python/name:os.system",
    "yaml_tag_python_module.yaml": "python/module:os",
    # a top level that is not a mapping
    "top_level_list.yaml": "expected a mapping",
    "top_level_scalar.yaml": "expected a mapping",
    "top_level_empty_file.yaml": "expected a mapping",
    "top_level_only_comments.yaml": "expected a mapping",
    "top_level_null.yaml": "expected a mapping",
    # unknown keys, at every level
    "unknown_key_top.yaml": "bakends: unknown key",
    "unknown_key_top_not_a_string.yaml": "[1]: Keys should be strings",
    "unknown_key_with_line_break.yaml": r"bad\nkey: unknown key",  # escaped, still one line
    "unknown_key_sweep.yaml": "sweep.dk: unknown key",
    "unknown_key_timing.yaml": "timing.budget: unknown key",
    "unknown_key_agreement.yaml": "agreement.tolerance: unknown key",
    "unknown_key_output.yaml": "output.directory: unknown key",
    "unknown_key_backend_mapping.yaml": "backends[0].lable: unknown key",
    "unknown_key_geometric_range.yaml": "sweep.n.stpe: unknown key",
    "range_with_both_step_and_factor.yaml": "sweep.n.step: unknown key",
    # required keys missing
    "missing_name.yaml": "name:",
    "missing_sweep.yaml": "sweep:",
    "missing_backends.yaml": "backends:",
    "missing_sweep_n.yaml": "sweep.n:",
    "missing_sweep_d_k.yaml": "sweep.d_k:",
    # wrong types (strict: no "64" → 64, no 64.0 → 64, no true → 1)
    "type_size_string_in_list.yaml": "sweep.n[0]:",
    "type_size_string_scalar.yaml": "sweep.n: expected a size (a whole number)",
    "type_size_float_in_list.yaml": "sweep.n[0]:",
    "type_size_float_scalar.yaml": "sweep.d_k: expected a size (a whole number)",
    "type_size_bool_in_list.yaml": "sweep.n[0]:",
    "type_size_bool_scalar.yaml": "sweep.d_k: expected a size (a whole number)",
    "type_range_start_string.yaml": "sweep.n.start:",
    "type_budget_s_string.yaml": "timing.budget_s:",
    "type_name_list.yaml": "name:",
    "type_name_number.yaml": "name:",
    "type_sweep_list.yaml": "sweep:",
    "type_backends_string.yaml": "backends:",
    "type_backends_null.yaml": "backends:",
    "type_backend_number.yaml": "backends[0]:",
    "type_backend_options_list.yaml": "backends[0].options:",
    "type_dtype_number.yaml": "sweep.dtype:",
    "type_seed_string.yaml": "seed:",
    # sizes and ranges out of bounds
    "size_zero.yaml": "sweep.n: sizes must be between 1",
    "size_zero_scalar.yaml": "sweep.n: sizes must be between 1",
    "size_negative.yaml": "got -5",
    "size_negative_m.yaml": "sweep.m: sizes must be between 1",
    "size_absurd.yaml": "got 1000000000000",
    "size_absurd_scalar_d_k.yaml": "sweep.d_k: sizes must be between 1",
    "size_list_empty.yaml": "sweep.n: must list at least one size",
    "size_list_empty_d_k.yaml": "sweep.d_k: must list at least one size",
    "range_start_zero.yaml": "sweep.n.start:",
    "range_stop_absurd.yaml": "sweep.n.stop:",
    "range_geometric_stop_below_start.yaml": "sweep.n: stop (64) is below start (512)",
    "range_linear_stop_below_start.yaml": "sweep.n: stop (64) is below start (512)",
    "range_factor_one.yaml": "sweep.n.factor:",
    "range_factor_below_one.yaml": "sweep.n.factor:",
    "range_factor_infinite.yaml": "sweep.n.factor:",
    "range_factor_nan.yaml": "sweep.n.factor:",
    "range_step_zero.yaml": "sweep.n.step:",
    "range_step_negative.yaml": "sweep.n.step:",
    "range_without_step_or_factor.yaml": "sweep.n: expected a list of sizes, or a range",
    "range_empty_mapping.yaml": "sweep.n: expected a list of sizes, or a range",
    "sweep_too_many_cells_linear.yaml": "sweep: expands to 281,474,976,710,656",
    "sweep_too_many_cells_factor_near_one.yaml": "sweep: expands to",
    "sweep_counts_past_int64.yaml": "sweep: a cell would count 1.58e+29 FLOP or bytes, more "
                                    "than the 2^63",
    "timing_budget_s_zero.yaml": "timing.budget_s:",
    "timing_budget_s_nan.yaml": "timing.budget_s:",
    "timing_timeout_s_infinite.yaml": "timing.timeout_s:",
    "timing_timeout_s_past_a_week.yaml": "timing.timeout_s: Input should be less than or equal "
                                         "to 604800",
    "timing_min_samples_too_few.yaml": "timing.min_samples:",
    "timing_max_below_min_samples.yaml": "timing: max_samples must be at least min_samples",
    "seed_negative.yaml": "seed:",
    "output_dir_nul.yaml": "output.dir: a path cannot contain a NUL character",
    # dtypes
    "dtype_unknown_float8.yaml": "sweep.dtype[1]:",
    "dtype_uppercase_FP32.yaml": "sweep.dtype[0]:",
    "dtype_empty_list.yaml": "sweep.dtype:",
    # backends
    "backends_empty_list.yaml": "backends:",
    "backend_unknown_name.yaml": "backends[1]: unknown backend 'numpi'",
    "backend_empty_name.yaml": "backends[0]:",
    "backend_mapping_without_name.yaml": "backends[0].name:",
    "backend_plugin_module_missing.yaml": "cannot import backend module 'nope.mod'",
    "backend_plugin_class_missing.yaml": "has no class 'Missing'",
    "backend_plugin_not_a_class.yaml": "'os:path' is not a backend class",
    "backend_plugin_class_without_scores.yaml": "'json:JSONDecoder' is not a backend class",
    "backend_plugin_path_without_class.yaml": "must look like 'package.module:ClassName'",
    "backend_plugin_relative_module.yaml": "cannot import backend module '.good_plugin'",
    "backend_unknown_option.yaml": "backends[0]: backend 'numpy': bad options",
    "backend_plugin_unknown_option.yaml": "backends[0]: backend 'einsum': bad options",
    "backend_label_bad_characters.yaml": "backends[0].label:",
    "backend_duplicate_label.yaml": "the label 'numpy' is used twice",
    "backend_duplicate_label_given.yaml": "the label 'same' is used twice",
    "backend_plugin_label_shadows_builtin.yaml": "'numpy', a built-in name",
    # config names that would put the run directory outside results/
    "name_escapes_parent.yaml": "name:",
    "name_with_slash.yaml": "name:",
    "name_hidden.yaml": "name:",
    "name_empty.yaml": "name:",
    "name_too_long.yaml": "name:",
}

# The bad configs that also go through `qkbench run`: at least one for each place a config can
# be refused (reading, YAML, each section's validation, backend resolution) and every case
# that touches security or the file system.
RUN_SAMPLE = {
    "yaml_bad_indentation.yaml", "yaml_unclosed_bracket.yaml", "yaml_tab_indentation.yaml",
    "yaml_unhashable_key.yaml", "yaml_duplicate_top_key.yaml", "yaml_deeply_nested.yaml",
    "yaml_tag_python_object_apply.yaml", "yaml_tag_python_object_new.yaml",
    "yaml_tag_python_name.yaml", "yaml_tag_python_module.yaml",
    "top_level_list.yaml", "top_level_scalar.yaml", "top_level_empty_file.yaml",
    "unknown_key_top.yaml", "unknown_key_with_line_break.yaml", "unknown_key_sweep.yaml",
    "unknown_key_timing.yaml", "unknown_key_agreement.yaml", "unknown_key_output.yaml",
    "unknown_key_backend_mapping.yaml",
    "missing_sweep.yaml", "type_size_string_in_list.yaml", "type_size_float_in_list.yaml",
    "type_size_bool_in_list.yaml", "type_budget_s_string.yaml", "type_name_list.yaml",
    "size_zero.yaml", "size_negative.yaml", "size_absurd.yaml", "size_list_empty.yaml",
    "range_linear_stop_below_start.yaml", "range_factor_one.yaml", "range_factor_infinite.yaml",
    "range_step_zero.yaml", "range_without_step_or_factor.yaml",
    "sweep_too_many_cells_linear.yaml", "sweep_too_many_cells_factor_near_one.yaml",
    "timing_timeout_s_infinite.yaml", "timing_timeout_s_past_a_week.yaml",
    "yaml_alias_bomb_in_flag.yaml", "output_dir_nul.yaml", "sweep_counts_past_int64.yaml", "dtype_unknown_float8.yaml", "dtype_uppercase_FP32.yaml",
    "backends_empty_list.yaml", "backend_unknown_name.yaml", "backend_empty_name.yaml",
    "backend_plugin_module_missing.yaml", "backend_plugin_class_missing.yaml",
    "backend_plugin_not_a_class.yaml", "backend_plugin_class_without_scores.yaml",
    "backend_unknown_option.yaml", "backend_duplicate_label.yaml",
    "backend_plugin_label_shadows_builtin.yaml",
    "name_escapes_parent.yaml", "name_with_slash.yaml", "name_hidden.yaml",
}

# Bad configs awkward to commit, written by the fixture: name → (content or None, fragment).
# None: no such file. b"": a folder of that name instead of a file.
GENERATED = {
    "not_utf8.yaml": (b"name: caf\xe9\nsweep: {n: [64], d_k: [16]}\nbackends: [numpy]\n",
                      "not UTF-8 text (byte 9)"),
    "nul_byte.yaml": (b"name: bad\x00example\nsweep: {n: [64], d_k: [16]}\nbackends: [numpy]\n",
                      "unacceptable character"),
    "a_directory.yaml": (b"", "is a directory"),
    "missing.yaml": (None, "config file not found"),
    "huge.yaml": (b"# padding\n" * 110_000, "larger than 1 MiB"),
    "x" * 300 + ".yaml": (None, "cannot read"),  # longer than any file system allows a name
}

ALL_BAD = {**BAD, **{name: fragment for name, (_, fragment) in GENERATED.items()}}
RUN_BAD = [name for name in ALL_BAD if name in RUN_SAMPLE or name in GENERATED]

# File in tests/configs/good → cells it expands to (backends × shapes × dtypes), by hand.
GOOD = {
    "geometric_range.yaml": 1 * 5 * 2,  # n = 16 .. 256 (stop 300 not hit); m = n
    "geometric_range_fractional_factor.yaml": 1 * 6 * 1,  # 100, 150, 225, 338, 506, 759
    "geometric_range_huge_factor.yaml": 1 * 1 * 1,  # start · factor overflows: just start
    "linear_range.yaml": 1 * (4 * 3) * 1,  # n 100..400 step 100, d_k 16, 40, 64
    "scalar_sizes.yaml": 1 * 1 * 1,
    "explicit_m.yaml": 1 * (3 * 2 * 2) * 1,  # n × m (512, 1024) × d_k; default dtype
    "backend_mapping.yaml": 2 * 1 * 2,
    "import_path_plugin.yaml": 3 * 2 * 1,  # plugin, plugin relabelled, numpy
    "minimal_optional_sections_omitted.yaml": 1 * 1 * 1,
    "all_sections.yaml": 1 * 2 * 3,
    "yaml_anchors_and_merge.yaml": 2 * (2 * 2) * 1,  # m = *sizes; backend merged from *mine
}

# Bad command lines: id → (arguments, fragment). {out}: a fresh path for the run directory,
# {full}: a folder that already holds a file, {file}: an existing file.
CLI = {
    "no_arguments": ([], "required: command"),
    "unknown_subcommand": (["frobnicate"], "invalid choice: 'frobnicate'"),
    "unknown_global_flag": (["--frobnicate", "validate", "configs/quick.yaml"],
                            "unrecognized arguments: --frobnicate"),
    "unknown_run_flag": (["run", "configs/quick.yaml", "--out", "{out}", "--frobnicate"],
                         "unrecognized arguments: --frobnicate"),
    "unknown_validate_flag": (["validate", "--strict", "configs/quick.yaml"],
                              "unrecognized arguments: --strict"),
    "validate_without_config": (["validate"], "required: config"),
    "validate_endless_device": (["validate", "/dev/zero"],
                                "not a regular file (a character device)"),
    # A FIFO with no writer: opening it for reading would wait forever.
    "validate_fifo": (["validate", "{fifo}"], "not a regular file (a FIFO)"),
    "run_fifo": (["run", "{fifo}", "--out", "{out}"], "not a regular file (a FIFO)"),
    "validate_two_configs": (["validate", "configs/quick.yaml", "configs/default.yaml"],
                             "unrecognized arguments"),
    "run_unknown_config_name": (["run", "no-such-config", "--out", "{out}"],
                                "no config named 'no-such-config'"),
    "run_out_without_value": (["run", "quick", "--out"], "--out: expected one argument"),
    "run_out_not_empty": (["run", "quick", "--out", "{full}"], "already exists and is not empty"),
    "run_out_is_a_file": (["run", "quick", "--out", "{file}"], "already exists"),
    "compare_without_arguments": (["compare"], "required"),
    "compare_one_argument": (["compare", "results/a"], "required"),
    "compare_missing_run_directories": (["compare", "no/such/run-a", "no/such/run-b"],
                                        "no/such/run-"),
}


@dataclass(frozen=True)
class Outcome:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    out: Path | None  # the --out directory given, if any


ENV = {**os.environ, "PYTHONIOENCODING": "utf-8"}


def _qkbench(args: list[str], out: Path | None) -> Outcome:
    """One case through a fresh `python -m qkbench` (what the forked children stand in for)."""
    done = subprocess.run([sys.executable, "-m", "qkbench", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=120, check=False)
    return Outcome(tuple(args), done.returncode, done.stdout, done.stderr, out)


def _forked(jobs: dict[str, tuple[list[str], Path | None]], folder: Path) -> dict[str, Outcome]:
    keys = sorted(jobs)
    done = run_many([jobs[key][0] for key in keys], folder, REPO, ENV)
    return {key: Outcome(tuple(jobs[key][0]), code, stdout, stderr, jobs[key][1])
            for key, (code, stdout, stderr) in zip(keys, done)}


def _jobs(tmp: Path) -> dict[str, tuple[list[str], Path | None]]:
    """Every command the tests need, keyed as the tests ask for them."""
    generated = tmp / "generated"
    generated.mkdir()
    for name, (content, _) in GENERATED.items():
        if content == b"":
            (generated / name).mkdir()
        elif content is not None:
            (generated / name).write_bytes(content)
    full = tmp / "full"
    full.mkdir()
    (full / "keep.txt").write_text("not a run directory\n")
    fifo = tmp / "config.yaml"
    os.mkfifo(fifo)
    placeholders = {"{full}": str(full), "{file}": str(full / "keep.txt"), "{fifo}": str(fifo)}

    jobs: dict[str, tuple[list[str], Path | None]] = {}
    bad = {name: BAD_DIR / name for name in BAD} | {name: generated / name for name in GENERATED}
    for name, path in bad.items():
        jobs[f"validate/{name}"] = (["validate", str(path)], None)
    for name in RUN_BAD:
        out = tmp / "runs" / name[:80]
        jobs[f"run/{name}"] = (["run", str(bad[name]), "--out", str(out), "--quiet"], out)
    for name in GOOD:
        jobs[f"good/{name}"] = (["validate", str(GOOD_DIR / name)], None)
    for case, (args, _) in CLI.items():
        out = tmp / "cli" / case
        args = [str(out) if a == "{out}" else placeholders.get(a, a) for a in args]
        given_out = Path(args[args.index("--out") + 1]) if "--out" in args[:-1] else None
        jobs[f"cli/{case}"] = (args, given_out)
    return jobs


@pytest.fixture(scope="session")
def outcomes(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    folder = tmp_path_factory.mktemp("bad_input")
    jobs = _jobs(folder)
    # Only what the selected tests will read (so `-k` stays fast).
    wanted = {item.callspec.params["key"] for item in request.session.items
              if item.module is sys.modules[__name__] and hasattr(item, "callspec")
              and "key" in item.callspec.params}
    return _forked({key: jobs[key] for key in wanted}, folder / "forked")


def assert_usage_error(outcome: Outcome, fragment: str) -> None:
    """Exit 2, one line on stderr, prefixed, no traceback, naming the problem."""
    shown = f"qkbench {' '.join(outcome.args)[:300]}\nstdout: {outcome.stdout[-2000:]}\n" \
            f"stderr: {outcome.stderr[-4000:]}"
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert "Traceback" not in outcome.stderr, shown
    assert outcome.returncode == 2, shown
    assert len(lines) == 1, shown
    assert lines[0].startswith(PREFIX), shown
    assert fragment in lines[0], f"expected {fragment!r} in the message\n{shown}"
    # The YAML tags that would run a command must never have run it.
    assert "pwned" not in outcome.stdout, shown


def assert_nothing_run(outcome: Outcome) -> None:
    """A refused run leaves no summary and no run directory behind."""
    out = outcome.out
    assert out is not None
    assert not list(out.parent.glob(f"{out.name}/**/summary.parquet")), outcome.args
    assert not out.exists() or not any(out.iterdir()), f"{out} left behind: {outcome.args}"


def test_tables_list_exactly_the_corpus() -> None:
    assert sorted(p.name for p in BAD_DIR.iterdir()) == sorted(BAD)
    assert sorted(p.name for p in GOOD_DIR.iterdir()) == sorted(GOOD)
    assert RUN_SAMPLE <= BAD.keys()


@pytest.mark.parametrize("key", [f"validate/{name}" for name in ALL_BAD],
                         ids=[name[:60] for name in ALL_BAD])
def test_validate_refuses_bad_config(outcomes: dict[str, Outcome], key: str) -> None:
    assert_usage_error(outcomes[key], ALL_BAD[key.split("/", 1)[1]])


@pytest.mark.parametrize("key", [f"run/{name}" for name in RUN_BAD],
                         ids=[name[:60] for name in RUN_BAD])
def test_run_refuses_bad_config_before_running(outcomes: dict[str, Outcome], key: str) -> None:
    assert_usage_error(outcomes[key], ALL_BAD[key.split("/", 1)[1]])
    assert_nothing_run(outcomes[key])


@pytest.mark.parametrize("key", [f"cli/{case}" for case in CLI], ids=list(CLI))
def test_bad_command_line(outcomes: dict[str, Outcome], key: str) -> None:
    outcome = outcomes[key]
    case = key.split("/", 1)[1]
    if case.startswith("compare") and "invalid choice: 'compare'" in outcome.stderr:
        pytest.skip("no compare subcommand yet")
    assert_usage_error(outcome, CLI[case][1])
    if outcome.out is not None and outcome.out.name == "full":
        # The existing folder is left exactly as it was.
        assert sorted(p.name for p in outcome.out.iterdir()) == ["keep.txt"]
    elif outcome.out is not None and outcome.out.is_file():
        assert outcome.out.read_text() == "not a run directory\n"
    elif outcome.out is not None:
        assert_nothing_run(outcome)


@pytest.mark.parametrize("key", [f"good/{name}" for name in GOOD], ids=list(GOOD))
def test_good_config_validates(outcomes: dict[str, Outcome], key: str) -> None:
    outcome = outcomes[key]
    shown = f"stdout: {outcome.stdout}\nstderr: {outcome.stderr}"
    assert outcome.returncode == 0, shown
    assert outcome.stderr == "", shown
    cells = GOOD[key.split("/", 1)[1]]
    assert re.search(rf"\bvalid\b.*\b{cells} cells\b", outcome.stdout), shown


# One case of each kind the fixture runs: a YAML error, a refused run, a parser error, a good
# config, and a config whose plugin import fails inside the CLI.
FAITHFUL = ["validate/yaml_bad_indentation.yaml", "run/unknown_key_sweep.yaml",
            "cli/unknown_run_flag", "good/import_path_plugin.yaml",
            "validate/backend_plugin_module_missing.yaml", "cli/no_arguments"]


def test_forked_cases_match_fresh_processes(tmp_path: Path) -> None:
    """The fixture's forked children stand in for fresh `python -m qkbench` processes: the same
    exit status, stdout and stderr, to the byte."""
    jobs = {key: job for key, job in _jobs(tmp_path).items() if key in FAITHFUL}
    assert sorted(jobs) == sorted(FAITHFUL)
    forked = _forked(jobs, tmp_path / "forked")
    for key, (args, out) in jobs.items():
        fresh = _qkbench(args, out)
        assert (forked[key].returncode, forked[key].stdout, forked[key].stderr) == (
            fresh.returncode, fresh.stdout, fresh.stderr), key
