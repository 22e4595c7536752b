"""Generated config files, valid and invalid, for fuzzing the config path
(tests/test_config_fuzz.py, benchmarks/config_fuzz.py): Hypothesis strategies that give the
bytes of a file.

Two layers. A config is first a mapping: a valid one (every section, the attention axes,
ranges, presets, backend mappings) in which a few values at random key paths are replaced by
wrong ones — wrong types, zero, negative and huge numbers, NaN and infinity, unicode, empty
and deeply nested lists and mappings, unknown keys. Its YAML text is then, at times, mangled
the way no dumper writes: a duplicate key, an alias bomb (nine aliases of nine), YAML tags,
nesting deeper than any parser's recursion, several documents, a cut at a random byte, bytes
that are not UTF-8, a file past the size cap.

Whatever the file, the contract is the same (DESIGN.md, "Command line"): `qkbench validate`
exits 0, or 2 with exactly one line on stderr; never a traceback, never a hang.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

# Backends that cost no library import in a forked child: the built-in numpy, a plugin of the
# tests by import path, and names that are not backends at all (never a real module whose
# import does something: a random module path could name one).
BACKEND_NAMES = ("numpy", "tests.plugins.good_plugin:EinsumBackend", "numpy-gpu", "",
                 "qkbench_no_such_module:Backend", "tests.plugins.good_plugin:NoSuchClass",
                 "tests.plugins.good_plugin:", ":EinsumBackend", "..relative:X", "NUMPY",
                 "nümpy", "numpy\n", "numpy:", "os.path:join")

WORDS = {"dtype": ("float16", "bfloat16", "float32", "float64"), "phase": ("kernel", "end_to_end"),
         "cache": ("warm", "cold"), "preset": ("gpt-2", "llama-3-8b", "qwen2.5-7b", "gemma-2-9b")}

# ------------------------------------------------------------------ values


def numbers() -> st.SearchStrategy[Any]:
    """Numbers a config meets: small sizes, edges, huge ones and non-finite floats."""
    return st.one_of(
        st.integers(1, 64),
        st.sampled_from((0, -1, 1 << 24, (1 << 24) + 1, 1 << 31, 1 << 63, 1 << 64, 10**30,
                         10**400)),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from((0.5, 1.0, 1.0000001, 1e-300, 1e300, -0.0, 2.0)),
    )


def texts() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(("", " ", "512", "1e3", "true", "null", "~", "float32 ", "FP32",
                         "ünïcödé", "名前", "🔥" * 3, "a" * 300, "../../etc", ".hidden", "a/b",
                         "x\ny", "\t", "\x00", "\u202e", "%(name)s", "{n}", "!!python/name:os")),
        st.text(max_size=40),
    )


def leaves() -> st.SearchStrategy[Any]:
    return st.one_of(numbers(), texts(), st.booleans(), st.none())


def shared_lists(levels: int) -> dict[str, list[Any]]:
    """Each level lists the one before nine times, by reference: YAML writes it with anchors
    and aliases in a few hundred bytes, and it stands for 9^levels items."""
    level: list[Any] = ["lol"] * 9
    out = {"l0": level}
    for i in range(1, levels):
        level = [level] * 9
        out[f"l{i}"] = level
    return out


def wrong_values() -> st.SearchStrategy[Any]:
    """Any plain-data value, nested at times (lists and mappings of wrong values), or an alias
    bomb."""
    plain = st.recursive(
        leaves(),
        lambda inner: st.one_of(st.lists(inner, max_size=5),
                                st.dictionaries(st.one_of(texts(), st.integers(-3, 3)), inner,
                                                max_size=4)),
        max_leaves=12,
    )
    return st.one_of(plain, bombs())


def bombs() -> st.SearchStrategy[Any]:
    """An alias bomb (`shared_lists`) big enough that anything which walks it never ends, as a
    mapping or inside a list."""
    levels = st.sampled_from((3, 9, 10)).map(shared_lists)
    return st.one_of(levels, levels.map(lambda bomb: [bomb]))


# ------------------------------------------------------------------ a valid config


def size_axis(low: int = 1, high: int = 64) -> st.SearchStrategy[Any]:
    """A size axis in each form the config takes: a size, a list, a geometric or linear range."""
    return st.one_of(
        st.integers(low, high),
        st.lists(st.integers(low, high), min_size=1, max_size=4),
        st.builds(lambda a, b, f: {"start": min(a, b), "stop": max(a, b), "factor": f},
                  st.integers(low, high), st.integers(low, high),
                  st.sampled_from((1.5, 2, 4, 1e6))),
        st.builds(lambda a, b, s: {"start": min(a, b), "stop": max(a, b), "step": s},
                  st.integers(low, high), st.integers(low, high), st.integers(1, 32)),
    )


@st.composite
def valid_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A config `validate` accepts (by construction; mutations come after)."""
    sweep: dict[str, Any] = {"n": draw(size_axis())}
    if draw(st.booleans()):
        sweep["preset"] = draw(st.lists(st.sampled_from(WORDS["preset"]), min_size=1,
                                        max_size=2, unique=True))
    else:
        sweep["d_k"] = draw(size_axis())
        if draw(st.booleans()):
            kv = draw(st.integers(1, 4))
            sweep["heads"], sweep["kv_heads"] = [kv * draw(st.integers(1, 4))], [kv]
    if draw(st.booleans()):
        sweep["m"] = draw(size_axis(65, 256))  # above every n: causal stays valid
    if draw(st.booleans()):
        sweep["batch" if draw(st.booleans()) else "tokens"] = draw(st.integers(1, 8))
    for flag in ("causal", "scaled"):
        if draw(st.booleans()):
            sweep[flag] = draw(st.sampled_from((True, False, [True, False])))
    for axis in ("dtype", "phase", "cache"):
        if draw(st.booleans()):
            sweep[axis] = draw(st.lists(st.sampled_from(WORDS[axis]), min_size=1, unique=True))
    if draw(st.booleans()):
        sweep["threads"] = draw(st.lists(st.integers(1, 8), min_size=1, max_size=2, unique=True))
    if "m" not in sweep and True in (sweep.get("causal") if isinstance(sweep.get("causal"), list)
                                     else [sweep.get("causal")]):
        sweep["m"] = [256]
    backend = draw(st.sampled_from(("numpy", {"name": "numpy", "label": "np"},
                                    {"name": "numpy", "max_gflop": 0.5},
                                    "tests.plugins.good_plugin:EinsumBackend")))
    config: dict[str, Any] = {"name": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}",
                                                         fullmatch=True)),
                              "sweep": sweep, "backends": [backend]}
    if draw(st.booleans()):
        config["description"] = draw(texts())
    if draw(st.booleans()):
        config["seed"] = draw(st.integers(0, 1 << 40))
    if draw(st.booleans()):
        config["timing"] = {"budget_s": 0.1, "timeout_s": 30.0, "min_samples": 6,
                            "processes": draw(st.integers(1, 4)),
                            "machine_check": draw(st.booleans())}
    if draw(st.booleans()):
        config["agreement"] = {"max_reference_elements": draw(st.integers(1, 1 << 24))}
    if draw(st.booleans()):
        config["output"] = {"dir": "results"}
    return config


# ------------------------------------------------------------------ wrong values at key paths


# Where a wrong value lands: each section, each axis, each timing field, keys no schema has.
KEY_PATHS = (
    ("name",), ("description",), ("seed",), ("sweep",), ("backends",), ("timing",),
    ("agreement",), ("output",), ("unknown",), ("ñame",), ("sweep", "n"), ("sweep", "m"),
    ("sweep", "d_k"), ("sweep", "batch"), ("sweep", "tokens"), ("sweep", "heads"),
    ("sweep", "kv_heads"), ("sweep", "causal"), ("sweep", "scaled"), ("sweep", "dtype"),
    ("sweep", "phase"), ("sweep", "cache"), ("sweep", "threads"), ("sweep", "preset"),
    ("sweep", "n", "start"), ("sweep", "n", "factor"), ("sweep", "n", "step"),
    ("sweep", "extra"), ("backends", 0), ("backends", 0, "name"), ("backends", 0, "label"),
    ("backends", 0, "options"), ("backends", 0, "max_gflop"), ("backends", 0, "options", "x"),
    ("timing", "budget_s"), ("timing", "timeout_s"), ("timing", "target_rel_ci"),
    ("timing", "min_samples"), ("timing", "max_samples"), ("timing", "warmup_s"),
    ("timing", "min_sample_s"), ("timing", "processes"), ("timing", "machine_check"),
    ("timing", "cuda_graphs"), ("agreement", "max_reference_elements"), ("output", "dir"),
)


def put(config: Any, path: tuple[Any, ...], value: Any) -> Any:
    """`config` with `value` at `path`, building the containers on the way (a wrong-typed
    container on the way is replaced: the wrong value must land)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(config) if isinstance(config, list) else []
        while len(items) <= head:
            items.append({})
        items[head] = put(items[head], rest, value)
        return items
    mapping = dict(config) if isinstance(config, dict) else {}
    mapping[head] = put(mapping.get(head), rest, value)
    return mapping


@st.composite
def mutated_configs(draw: st.DrawFn) -> Any:
    """A valid config with 0 to 3 wrong values; or, at times, no mapping at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(wrong_values())  # a list, a scalar, null: not a mapping at the top
    config: Any = draw(valid_configs())
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(KEY_PATHS))
        if draw(st.booleans()) and path[-1] in ("n", "m", "d_k", "batch", "heads", "kv_heads"):
            value = draw(st.one_of(numbers(), st.lists(numbers(), max_size=4)))
        elif draw(st.integers(0, 3)) == 0:
            value = draw(st.sampled_from(BACKEND_NAMES)) if path[0] == "backends" \
                else draw(wrong_values())
        else:
            value = draw(wrong_values())
        if draw(st.integers(0, 9)) == 0:
            value = nested(value, draw(st.integers(2, 60)))
        config = put(config, path, value)
    if draw(st.integers(0, 4)) == 0:  # a bomb wherever a value may land, one config in five
        config = put(config, draw(st.sampled_from(KEY_PATHS)), draw(bombs()))
    return config


def nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


# ------------------------------------------------------------------ YAML text, mangled


def dumped(config: Any, unicode: bool, flow: bool) -> str:
    return yaml.safe_dump(config, allow_unicode=unicode, default_flow_style=flow,
                          sort_keys=False, width=10_000)


def alias_bomb(levels: int) -> str:
    """A flow mapping in which each level lists the previous one nine times: a few hundred
    bytes that stand for 9^levels items."""
    parts = ["{l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        parts.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return ", ".join(parts) + "}"


TAGS = ("!!python/object/apply:os.system ['echo pwned']", "!!python/name:os.system",
        "!!binary aGVsbG8=", "!!set {a, b}", "!!omap [a: 1, b: 2]", "!!pairs [a: 1, a: 2]",
        "!!timestamp 2001-12-14", "!!float 512", "!!int '0x10'", "!!str 512", "!custom 1",
        "!!null ''", "2001-12-14", "0o17", "0x1F", "1_000", ".inf", "-.inf", ".nan", "y", "NO",
        "*undefined", "&anchor 1", "<<: {a: 1}")

# Where a mangled piece of YAML goes, as a line that replaces or adds a key (top level, or in
# sweep, which every generated mapping config has).
PLACES = ("name", "sweep", "backends", "timing", "description", "seed",
          "  n", "  causal", "  dtype", "  d_k", "  m", "  preset")


@st.composite
def config_files(draw: st.DrawFn) -> bytes:
    """The bytes of one config file."""
    config = draw(mutated_configs())
    text = dumped(config, draw(st.booleans()), draw(st.sampled_from((False, None))))
    kind = draw(st.sampled_from(("as dumped",) * 8 + (
        "duplicate key", "alias bomb", "tag", "deep flow nesting", "deep block nesting",
        "documents", "cut", "not UTF-8", "control bytes", "too large", "tabs", "empty")))
    place = draw(st.sampled_from(PLACES))
    event(f"file: {kind}")
    if kind == "duplicate key":
        lines = text.splitlines()
        tops = [line for line in lines if line and not line.startswith((" ", "-"))]
        text += "\n".join(draw(st.sampled_from(tops)) for _ in range(1)) + "\n" if tops else ""
    elif kind == "alias bomb":
        text += f"{place.strip()}: {alias_bomb(draw(st.integers(2, 10)))}\n" \
            if not place.startswith(" ") else _in_sweep(text, place, alias_bomb(9))
    elif kind == "tag":
        value = draw(st.sampled_from(TAGS))
        text = _in_sweep(text, place, value) if place.startswith(" ") \
            else text + f"{place}: {value}\n"
    elif kind == "deep flow nesting":
        depth = draw(st.sampled_from((50, 500, 5_000, 50_000)))
        text = _in_sweep(text, place, "[" * depth + "1" + "]" * depth) if place.startswith(" ") \
            else text + f"{place}: " + "{a: " * depth + "1" + "}" * depth + "\n"
    elif kind == "deep block nesting":
        depth = draw(st.integers(20, 400))
        text += "deep:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(depth)) \
            + " " * (depth + 1) + "1\n"
    elif kind == "documents":
        text = text + "---\n" + text
    elif kind == "cut":
        text = text[:draw(st.integers(0, max(0, len(text) - 1)))]
    elif kind == "tabs":
        text = text.replace("  ", "\t", draw(st.integers(1, 3)))
    elif kind == "empty":
        text = draw(st.sampled_from(("", "\n", "# only a comment\n", "---\n", "...\n", "~\n")))
    data = text.encode("utf-8")
    if kind == "not UTF-8":
        junk = draw(st.sampled_from((b"\xff\xfe", b"\xc3\x28", b"\xa0\xa1", b"\xed\xa0\x80",
                                     b"\xf8\x88\x80\x80\x80", b"\x80")))
        at = draw(st.integers(0, len(data)))
        data = data[:at] + junk + data[at:]
        if draw(st.booleans()):
            data = text.encode(draw(st.sampled_from(("utf-16", "utf-32", "latin-1"))),
                               errors="replace")
    elif kind == "control bytes":
        junk = draw(st.binary(min_size=1, max_size=8))
        at = draw(st.integers(0, len(data)))
        data = data[:at] + junk + data[at:]
    elif kind == "too large":
        data += b"# " + b"x" * (1 << 20) + b"\n"
    return data


def _in_sweep(text: str, place: str, value: str) -> str:
    """`text` with the sweep key `place` (indented) set to `value`, as a line in the sweep."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.rstrip() == "sweep:":
            return "\n".join(lines[:index + 1] + [f"{place}: {value}"] + lines[index + 1:]) \
                + "\n"
    return text + f"sweep:\n{place}: {value}\n"


def draw_files(count: int, at_seed: int | None = None) -> list[bytes]:
    """`count` generated config files outside a test: with `at_seed`, the ones that seed
    draws; without, the derandomized draw (the same files every run, as CI draws them)."""
    drawn: list[bytes] = []

    @settings(max_examples=count, derandomize=at_seed is None, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(data=config_files())
    def collect(data):
        drawn.append(data)

    (collect if at_seed is None else seed(at_seed)(collect))()
    return drawn[:count]
