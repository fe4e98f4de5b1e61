"""The README as a new user follows it: every shell command is one the CLI accepts, and running them leaves a
clean checkout (outputs go to git-ignored places; the committed report and baseline change only when asked)."""
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from gradverify.cli import build_parser

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def shell_blocks(markdown: str) -> list:
    """The bodies of the ```bash blocks."""
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)


def workflow_commands(markdown: str) -> list:
    """The `run:` commands of the ```yaml blocks: folded `>-` scalars joined into one line, `|` blocks line by line."""
    commands = []
    for block in re.findall(r"```yaml\n(.*?)```", markdown, flags=re.S):
        lines = block.splitlines()
        for k, line in enumerate(lines):
            found = re.match(r"(\s*)- run: (.*)$", line)
            if not found:
                continue
            style = found.group(2).strip()
            if style not in (">-", "|"):
                commands.append(found.group(2))
                continue
            indent, scalar = len(found.group(1)), []
            for following in lines[k + 1:]:
                if len(following) - len(following.lstrip()) <= indent + 2:
                    break
                scalar.append(following.strip())
            commands.extend([" ".join(scalar)] if style == ">-" else scalar)
    return commands


def commands(markdown: str) -> list:
    """Every command line of the README's shell blocks and workflow, comments dropped, split by shlex."""
    lines = [line for block in shell_blocks(markdown) for line in block.splitlines()] + workflow_commands(markdown)
    split = [shlex.split(line, comments=True) for line in lines]
    return [argv for argv in split if argv]


def gradverify_argvs(markdown: str) -> list:
    """The arguments of every `python -m gradverify ...` in the README (chained `&&` commands included)."""
    found = []
    for argv in commands(markdown):
        for part in " ".join(argv).split(" && "):
            words = part.split()
            if words[:3] == ["python", "-m", "gradverify"]:
                found.append(words[3:])
    return found


def test_every_readme_gradverify_command_parses_with_the_cli():
    argvs = gradverify_argvs(README)
    assert {argv[0] for argv in argvs} >= {"report", "fuzz", "mutants", "regress"}
    parser = build_parser()
    for argv in argvs:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"the README's `python -m gradverify {' '.join(argv)}` is not accepted by the CLI")


def test_readme_shell_blocks_are_valid_shell_and_pip_requirements_parse():
    from packaging.requirements import Requirement

    for block in shell_blocks(README):
        done = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
        assert done.returncode == 0, (block, done.stderr)
    pip_targets = [argv[2] for argv in commands(README) if argv[:2] == ["pip", "install"] and argv[2] != "-e"]
    assert pip_targets, "the README shows how to install gradverify in another project"
    for target in pip_targets:  # the workflow takes the URL from a variable it checks first
        assert "$" not in target or 'test -n "$GRADVERIFY_URL"' in README, target
        requirement = Requirement(target.replace("$GRADVERIFY_URL", "https://example.org/gradverify.git"))  # no package index has gradverify: it comes from its repository
        assert requirement.name == "gradverify" and (requirement.url or "").startswith("git+https://"), target
        assert requirement.extras <= {"torch", "jax", "test", "all"}


def test_readme_runs_write_to_git_ignored_places_by_default():
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    assert build_parser().parse_args(["report"]).out == pathlib.Path("reports", "latest")
    targets = ["reports/latest/report.md", "audit-torch/findings.md", "audit-jax/findings.md"]
    for argv in gradverify_argvs(README):
        for flag in ("--json", "--out", "--junit-xml"):
            if flag in argv and "--cases" not in argv:  # --cases examples live in the user's project
                targets.append(argv[argv.index(flag) + 1])
    for target in targets:
        ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", target], cwd=ROOT)
        assert ignored.returncode == 0, f"the README writes {target}, which git does not ignore"


SMALL = {"report": ["--quick"], "fuzz": ["--graphs", "3", "--workers", "1"], "mutants": ["--graphs", "2"],
         "audit": ["--ops", "sin", "--dtypes", "float64", "--orders", "1"]}
"""Smaller sizes for the README's commands, appended (argparse keeps the last value of a repeated option)."""


def small(argv: list) -> list:
    argv = list(argv) + SMALL.get(argv[0], [])
    if argv[0] == "mutants":
        from gradverify.fuzz import mutants

        argv += ["--only", mutants.MUTANTS[0].name]
    if argv[0] == "regress":
        argv += ["--repeats", "1"]
    return argv


def _git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def _clone(tmp_path):
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True,
                   capture_output=True)
    return clone


def _run_readme_commands(clone, skip):
    env = {**os.environ, "PYTHONPATH": str(clone)}
    ran = []
    for argv in gradverify_argvs(README):
        if argv[0] in skip or ("--cases" in argv and not (clone / argv[argv.index("--cases") + 1]).exists()):
            continue
        done = subprocess.run([sys.executable, "-m", "gradverify", *small(argv)], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode in (0, 1), (argv, done.stderr[-2000:])
        assert _git("status", "--porcelain", cwd=clone) == "", f"`{' '.join(argv)}` dirtied the checkout"
        ran.append(argv[0])
    return ran


def test_readme_commands_leave_a_clean_checkout(tmp_path):
    """Every README command but the report and the audit (run by the nightly twin below) in a fresh clone, small
    sizes; their default folders are checked to be git-ignored above."""
    clone = _clone(tmp_path)
    ran = _run_readme_commands(clone, skip={"report", "audit"})
    assert {"fuzz", "mutants", "regress"} <= set(ran)


@pytest.mark.nightly
def test_every_readme_command_including_the_report_leaves_a_clean_checkout(tmp_path):
    clone = _clone(tmp_path)
    ran = _run_readme_commands(clone, skip=set())
    assert {"report", "audit"} <= set(ran) and (clone / "reports" / "latest" / "report.md").is_file()


def test_version_and_help_do_not_import_the_subcommands():
    probe = ("import contextlib, io, sys; from gradverify.cli import main\n"
             "for argv in (['--version'], ['--help']):\n"
             "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
             "        main(argv)\n"
             "    assert out.getvalue().strip(), argv\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'jax', 'pandas', 'hypothesis')"
             " or m.endswith('.cli') and m != 'gradverify.cli'))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert build_parser(commands=["fuzz"]).parse_args(["fuzz", "--graphs", "3"]).graphs == 3
