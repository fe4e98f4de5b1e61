"""`pip install .` (not editable) gives a package that works on its own: every subpackage and entry point is in
the wheel, and, installed into a fresh virtual environment, the CLI and the pytest plugin run outside the checkout."""
import os
import pathlib
import site
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("gradverify", "reference_impls")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and "No module named" in done.stderr:
        pytest.skip(f"cannot build a wheel here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("gradverify-*.whl")
    return path


def test_wheel_holds_every_module_and_the_entry_points(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {str(p.relative_to(ROOT)) for package in PACKAGES for p in (ROOT / package).rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert sources <= names, sorted(sources - names)[:10]
    outside = {n for n in names if not n.startswith(PACKAGES) and ".dist-info/" not in n}
    assert not outside, sorted(outside)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[pytest11]\ngradverify = gradverify.plugin.pytest_plugin" in text
    assert "[console_scripts]\ngradverify = gradverify.cli:main" in text


PLUGIN_TEST = '''
import torch


def test_uses_the_installed_plugin(gradcheck):
    assert gradcheck(torch.sin, torch.linspace(-1, 1, 5, dtype=torch.float64)).verdict == "pass"
'''


@pytest.mark.nightly
def test_installed_wheel_works_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", "--force-reinstall", str(wheel)], check=True, capture_output=True, env=env)
    # Then the dependencies come from this environment (appended after the venv's own site-packages; its .pth
    # files, such as an editable gradverify, are not processed), so nothing is downloaded.
    pathlib.Path(purelib, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    user = tmp_path / "user"
    user.mkdir()
    (user / "test_user.py").write_text(PLUGIN_TEST)

    def run(*args):
        done = subprocess.run([python, *args], cwd=user, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, (args, done.stdout[-1500:], done.stderr[-1500:])
        return done.stdout

    assert run("-c", "import gradverify; print(gradverify.__file__)").startswith(purelib)
    assert run("-m", "gradverify", "--version").startswith("gradverify ")
    run("-m", "gradverify", "report", "--quick", "--out", "out")
    assert "## The answer" in (user / "out" / "report.md").read_text()
    run("-m", "gradverify", "fuzz", "--graphs", "3", "--workers", "1", "--json", "out/fuzz.json")
    run("-m", "gradverify", "regress", "record", "--out", "out/baseline.json", "--repeats", "1")
    run("-m", "gradverify", "regress", "compare", "--baseline", "out/baseline.json", "--repeats", "1")
    assert "1 passed" in run("-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py")
