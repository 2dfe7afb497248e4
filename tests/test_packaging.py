"""A real wheel: build it, install it outside the repository, import every subpackage from there."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUBPACKAGES = ["metafab.reference", "metafab.hw", "metafab.gen", "metafab.gen.engines", "metafab.sim",
               "metafab.sim.benches"]


def test_wheel_installs_and_imports_outside_the_repo(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(REPO)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("metafab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for pkg in SUBPACKAGES:
        assert f"{pkg.replace('.', '/')}/__init__.py" in names, pkg
    assert any(n.startswith("metafab/reference/data/") and n.endswith(".npz") for n in names)
    assert not any(n.startswith(("tests/", "hw/", "reference/")) for n in names)  # only under metafab/
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                    str(wheel)], check=True, cwd=tmp_path)
    deps = sysconfig.get_paths()["purelib"]
    # -S: no site processing, so the editable install of the checkout cannot answer the imports
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import importlib\n"
        f"for name in {SUBPACKAGES!r}:\n"
        "    m = importlib.import_module(name)\n"
        "    assert m.__file__.startswith(sys.argv[1]), (name, m.__file__)\n"
        "from metafab.reference.weights import load_sinusoid_init\n"
        "assert len(load_sinusoid_init()) == 3\n"
        "import metafab.hw.maml_engine, metafab.gen.cli, metafab.sim.runner\n"
        "from metafab.gen.engines import engine_names\n"
        "assert engine_names()[:3] == ('maml', 'maml-cls', 'match'), engine_names()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code, str(site), deps], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_layers_below_gen_do_not_import_it():
    """reference/, hw/ and sim/ never import metafab.gen (docs/architecture.md): gen ties them together."""
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    offenders = []
    for layer in ("reference", "hw", "sim"):
        for path in sorted((repo / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                if any(n == "metafab.gen" or n.startswith("metafab.gen.") for n in names):
                    offenders.append(f"{path.relative_to(repo)}:{node.lineno}")
    assert offenders == []
