"""The repository's shape: scripts on top over one package beneath, no script imported by any module, no upward
import, no import circle; refusals print one line and every other error keeps its traceback, from every script."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMMAND_OF, ROOT, write_config

SCRIPTS = ("make_pairs", "train", "evaluate", "export_onnx", "predict", "crossval", "review")
TOP_LIBRARY = ("model", "data", "artrank")  # what the scripts share at the top, and the Python API
PACKAGE = "pipeline"


def module_files() -> dict[str, Path]:
    """Every module of the repository by dotted name: the top level, the package, bench/ and tools/."""
    modules = {path.stem: path for path in ROOT.glob("*.py")}
    for folder in (PACKAGE, "bench", "tools"):
        for path in (ROOT / folder).glob("*.py"):
            modules[folder if path.stem == "__init__" else f"{folder}.{path.stem}"] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The repository modules `name` imports, anywhere in the file (inside functions too)."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(filter(None, [package.rsplit(".", node.level - 1)[0], base]))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in known and target != name}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def test_the_top_level_holds_the_scripts_the_two_shared_files_and_the_api_only():
    assert sorted(path.stem for path in ROOT.glob("*.py")) == sorted(SCRIPTS + TOP_LIBRARY)


def test_no_module_imports_a_script():
    importers = {name: sorted(set(SCRIPTS) & targets) for name, targets in import_graph().items()}
    assert {name: scripts for name, scripts in importers.items() if scripts} == {}


def test_the_package_imports_nothing_from_the_top_level():
    top = set(SCRIPTS + TOP_LIBRARY)
    upward = {name: sorted(targets & top) for name, targets in import_graph().items() if name.startswith(PACKAGE)}
    assert {name: targets for name, targets in upward.items() if targets} == {}


def test_bench_and_tools_import_the_library_never_a_script():
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith(("bench", "tools")):
            assert not targets & set(SCRIPTS), (name, targets)


def test_there_is_no_import_circle():
    graph, done, path = import_graph(), set(), []

    def visit(name: str) -> None:
        if name in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(name):] + [name]))
        if name in done:
            return
        path.append(name)
        for target in sorted(graph[name]):
            visit(target)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_the_graph_sees_relative_and_lazy_imports():
    """The checks above are only as good as the graph: a relative import and one inside a function count."""
    graph = import_graph()
    assert "pipeline.errors" in graph["pipeline.config"]  # from .errors import ArtrankError
    assert "model" in graph["artrank"]  # imported inside run_scorer
    assert "pipeline.demo_data" in graph["data"]  # imported inside check_data_dir


# A library function every script calls while it parses its config raises what the plant says: first a
# refusal (the script's own handler must turn it into one line), then a bug (which must escape with its traceback).
PLANTED = """
import runpy, sys
import pipeline.arguments as arguments
from pipeline.errors import ArtrankError
def planted(kind):
    def check_config(cfg, source):
        raise kind("planted inside the library")
    return check_config
sys.argv = [{script!r}, *{command!r}, "--config", {config!r}]
arguments.check_config = planted(ArtrankError)
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as exit:
    print(f"refusal exit: {{exit.code}}", flush=True)
arguments.check_config = planted(ValueError)
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bug_keeps_its_traceback_and_a_refusal_is_one_line_from_every_script(tmp_path, script):
    config = write_config(tmp_path, {"output_dir": str(tmp_path / "run")})
    code = PLANTED.format(script=str(ROOT / f"{script}.py"), command=COMMAND_OF.get(script, []), config=config)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert "refusal exit: error: planted inside the library" in result.stdout  # one line, exit status 1
    assert result.returncode == 1 and result.stderr.count("Traceback") == 1
    assert result.stderr.strip().splitlines()[-1] == "ValueError: planted inside the library"
