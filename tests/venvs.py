"""Virtual environments for the tests of the environments axis: real interpreters, made in
well under a second (no pip; the system's site packages give numpy, pandas, … offline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Put in a venv's site-packages: qkbench imports from this checkout (the code under test),
# ahead of any other installed copy, as an editable install would map it.
_FINDER = '''import sys
from importlib.util import spec_from_file_location

MAPPING = {mapping!r}


class _Checkout:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        where = MAPPING.get(name)
        if where is None:
            return None
        return spec_from_file_location(name, where + "/__init__.py",
                                       submodule_search_locations=[where])


sys.meta_path.insert(0, _Checkout)
'''


def make_venv(folder: Path, qkbench: bool = True, system_site: bool = True) -> Path:
    """A venv at `folder`; returns its python. With `qkbench`, it imports this checkout's."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip",
                    *(["--system-site-packages"] if system_site else []), str(folder)],
                   check=True, timeout=120)
    python = folder / "bin" / "python"
    if qkbench:
        site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                    "print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
        mapping = {"qkbench": str(REPO / "harness"), "qkbench.backends": str(REPO / "backends"),
                   "qkbench.configs": str(REPO / "configs")}
        (site / "_qkbench_checkout.py").write_text(_FINDER.format(mapping=mapping))
        (site / "_qkbench_checkout.pth").write_text("import _qkbench_checkout\n")
    return python
