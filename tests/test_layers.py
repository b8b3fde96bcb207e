"""The layers of ppbench/ and what each may import (docs/internals.md draws the same picture).

    plan      actions, placement, schedules, communication, theory, array forms   numpy (numba)
    config    RunConfig, model sizes, resource limits                              plan
    measure   events, metrics, result files                                        plan; pandas, pyarrow
    sim       costs, simulators, calibration, text timelines                       plan, config, measure
    report    tables, pictures, terminal text                                      plan, config, measure, sim
    run       executor, transports, stages, ranks, check, runner, launching        all of the above but report
    advise    profile files, profiling, candidates, prediction, verification       all of the above
    cli       parses and dispatches                                                everything (inside commands)

Every ppbench import, at module level or inside a function, is checked against this table; then
the torch-free layers are imported in a fresh interpreter, which must not load torch or mpi4py.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ppbench"

ALLOWED = {
    "plan": {"plan"},
    "config": {"plan", "config"},
    "measure": {"plan", "measure"},
    "sim": {"plan", "config", "measure", "sim"},
    "report": {"plan", "config", "measure", "sim", "report"},
    "run": {"plan", "config", "measure", "sim", "run"},
    "advise": {"plan", "config", "measure", "sim", "report", "run", "advise"},
    "cli": {"plan", "config", "measure", "sim", "report", "run", "advise", "cli"},
    "package": {"plan", "config", "measure", "sim", "report", "run", "advise", "cli", "package"},
}
#: third-party packages a layer must never import (the heavy runtime ones)
FORBIDDEN = {layer: {"torch", "mpi4py"} for layer in ("plan", "measure", "sim", "report")}
FORBIDDEN["plan"] |= {"pandas", "pyarrow", "matplotlib"}
#: ... and those it may import only inside a function (config: torch's dtype and CUDA check, on demand)
LAZY_ONLY = {"config": {"torch", "mpi4py"}}


def layer_of_module(parts: list[str]) -> str:
    """'plan' for ppbench.plan.x, 'config' for ppbench.config and ppbench.model_configs, ..."""
    if len(parts) < 2:
        return "package"
    head = parts[1]
    if head in ("config", "model_configs", "resources", "user_models"):
        return "config"
    if head in ("cli", "__main__"):
        return "cli"
    if head in ("__init__", "__version__"):
        return "package"
    return head


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["ppbench", *path.relative_to(PACKAGE).with_suffix("").parts]
        yield pytest.param(path, layer_of_module(parts), id=".".join(parts))


def imported(path: Path, module_level: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file, however deep in a function (or at module level only)."""
    out = []
    tree = ast.parse(path.read_text())
    for node in (tree.body if module_level else ast.walk(tree)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}:{node.lineno}: relative import; ppbench uses absolute ones"
            if node.module == "ppbench":      # from ppbench import plan / __version__
                out += [(node.lineno, f"ppbench.{alias.name}") for alias in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("path,layer", modules())
def test_each_module_imports_only_from_the_layers_below_it(path, layer):
    for line, name in imported(path):
        parts = name.split(".")
        where = f"{path.relative_to(PACKAGE)}:{line} ({layer}) imports {name}"
        if name == "ppbench.__version__":
            continue
        if parts[0] == "ppbench":
            assert layer_of_module(parts) in ALLOWED[layer], f"{where} ({layer_of_module(parts)})"
        else:
            assert parts[0] not in FORBIDDEN.get(layer, ()), where
    for line, name in imported(path, module_level=True):
        assert name.split(".")[0] not in LAZY_ONLY.get(layer, ()), f"{path.relative_to(PACKAGE)}:{line} imports {name}"


def test_the_torch_free_layers_load_without_torch_or_mpi():
    code = ("import importlib, pkgutil, sys\n"
            "import ppbench.plan, ppbench.measure, ppbench.sim, ppbench.report, ppbench.config, ppbench.cli\n"
            "for pkg in (ppbench.plan, ppbench.measure, ppbench.sim, ppbench.report):\n"
            "    for m in pkgutil.iter_modules(pkg.__path__):\n"
            "        importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
            "print(sorted(m for m in ('torch', 'mpi4py') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_layer_table_covers_every_folder():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == {"plan", "measure", "sim", "report", "run", "advise"}


def test_the_public_names_are_importable_from_ppbench():
    import ppbench

    for name in ppbench.__all__:
        assert getattr(ppbench, name) is not None, name
    assert ppbench.build_schedule("1f1b", 2, 2)[1][0] == ppbench.parse_action("1RECV_F0")


def test_the_wheel_ships_every_package_folder():
    """A folder missing from [tool.setuptools] packages is missing from a built wheel (asv installs one)."""
    import ast
    import re

    # the list as pyproject.toml writes it (read without tomllib, which Python 3.10 lacks)
    text = (PACKAGE.parent / "pyproject.toml").read_text()
    listed = set(ast.literal_eval(re.search(r"^packages = (\[.*?\])", text, re.M | re.S).group(1)))
    folders = {".".join(["ppbench", *p.parent.relative_to(PACKAGE).parts]) for p in PACKAGE.rglob("__init__.py")}
    assert listed == folders
