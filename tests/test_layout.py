"""The house rules, checked on the code itself: layers whose imports point down only, no
import cycle, the data-dir layout written once, and a non-editable install that works."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tickercast import layout

ROOT = Path(__file__).resolve().parents[1]
# repository folder -> import package, bottom layer first
LAYERS = {
    "tickercast": "tickercast",
    "tasks": "tickercast.tasks",
    "flows": "tickercast.flows",
    "app": "tickercast.app",
    "deployments": "tickercast.deployments",
}
RANK = {"library": 0, "tasks": 1, "flows": 2, "app": 3, "deployments": 3}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in LAYERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _layer(module: str) -> str:
    part = module.split(".")[1] if module.count(".") else ""
    return part if part in ("tasks", "flows", "app", "deployments") else "library"


def _imports(path: Path) -> set[str]:
    """Project modules a file imports, anywhere in it (lazy imports count)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out.update(n for n in names if n in MODULES)
    return out


def test_the_modules_were_found():
    assert "tickercast.config" in MODULES and "tickercast.flows.retrain" in MODULES
    assert "tickercast.tasks.train" in MODULES and "tickercast.app.cli" in MODULES


def test_imports_point_down_only():
    upward = [
        f"{module} ({_layer(module)}) imports {target} ({_layer(target)})"
        for module, path in MODULES.items()
        for target in _imports(path)
        if RANK[_layer(target)] > RANK[_layer(module)]
    ]
    assert upward == []


def test_no_import_cycle():
    graph = {m: _imports(p) - {m} for m, p in MODULES.items()}
    # a package's __init__ importing its own submodules is not a cycle of modules
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_only_runcontext_touches_prefect_in_the_library():
    touching = sorted(
        module
        for module, path in MODULES.items()
        if _layer(module) == "library"
        and re.search(r"^\s*(from|import) prefect", path.read_text(), re.M)
    )
    assert touching == ["tickercast.runcontext"]


def test_every_task_module_is_prefect_tasks_only():
    """The task layer holds @task wrappers (and their shared plumbing), no flows."""
    for module, path in MODULES.items():
        if _layer(module) == "tasks":
            assert "@flow" not in path.read_text(), module


def test_outputs_layout_is_what_gitignore_and_make_clean_follow():
    ignored = set((ROOT / ".gitignore").read_text().split())
    assert {f"data/{d}/" for d in layout.OUTPUT_DIRS} <= ignored
    make = (ROOT / "Makefile").read_text()
    listed = re.search(r"^OUTPUT_DIRS := (.*)$", make, re.M).group(1).split()
    assert tuple(listed) == layout.OUTPUT_DIRS
    assert set(layout.CACHE_DIRS) <= set(layout.OUTPUT_DIRS)


def test_no_module_spells_out_the_data_dir_layout():
    """Readers and writers ask tickercast.layout; nobody builds `<data_dir>/lake` by hand."""
    names = "|".join(layout.OUTPUT_DIRS)
    spelled = re.compile(r"""data_dir\)?\s*/\s*["'](""" + names + r""")["']""")
    offenders = [m for m, p in MODULES.items() if spelled.search(p.read_text())]
    assert offenders == []


def test_choice_tuples_derive_from_the_config_literals():
    from tickercast import choices
    from tickercast.config import BacktestConfig, RetrainConfig
    from tickercast.modeling.models import MODELS

    assert MODELS == choices.NETWORKS
    assert choices.values(RetrainConfig.leaf_field("source").annotation) == choices.SOURCES
    assert set(choices.values(BacktestConfig.leaf_field("model").annotation.__args__[0])) == (
        set(choices.NETWORKS) | set(choices.BASELINES)
    )


@pytest.mark.slow
def test_non_editable_install_runs_retrain_on_the_bundled_sample(tmp_path):
    """`pip install .` (a wheel, not the checkout) into a fresh venv, run from elsewhere:
    only `tickercast` lands in site-packages, and the sample ships inside it."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
        )
        .decode()
        .strip()
    )
    # the dependencies come from the project's venv (no second 1 GB download); a plain .pth
    # line adds that folder without running its .pth files, so the editable finder stays out
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "zz_deps.pth").write_text("\n".join(deps) + "\n")
    wheel = next(wheels.glob("tickercast-*.whl"))
    subprocess.run([py, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    top_level = {p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth"))}
    assert "tickercast" in top_level
    assert not {"tasks", "flows", "deployments", "app", "data"} & top_level
    assert sorted(p.name for p in (site / "tickercast" / "sample").glob("*.parquet")) == [
        "AAPL.parquet",
        "AMZN.parquet",
        "GOOG.parquet",
        "MSFT.parquet",
        "NVDA.parquet",
    ]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PYTHONPATH": ""}
    env.pop("PREFECT_API_URL", None)
    probe = subprocess.run(
        [
            py,
            "-c",
            "import tickercast, importlib.util as u; print(tickercast.__file__);"
            "print(u.find_spec('tasks'), u.find_spec('flows'))",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.splitlines() == [str(site / "tickercast" / "__init__.py"), "None None"]
    run = subprocess.run(
        [env_dir / "bin" / "tickercast", "retrain", "--epochs", "1", "--data-dir", "out"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "AAPL: bundle" in run.stdout
    assert (elsewhere / "out" / "models" / "AAPL" / "versions" / "1" / "model.keras").is_file()
