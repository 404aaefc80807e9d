"""Every pipeline installs exbe only from a source the admin names -- a git URL pinned to a full commit, or a wheel,
sdist or project directory in the checkout -- and refuses anything pip would look up by name on a package index,
where anyone can register ``exbe`` and run code on an agent that holds domain credentials.

Each test configures a pipeline the way an admin does (a workflow input, a repository or pipeline variable, a
template parameter), resolves the install step's environment the way the platform would (tests/pipelines_support.py)
and runs the step's own script, with pip replaced by a recorder: a guard that let a name through would install
nothing here, and the test would see the pip command it tried.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .pipelines_support import (
    AZURE_NIGHTLY,
    AZURE_RELEASE,
    AZURE_STAGE,
    GITHUB_NIGHTLY,
    GITHUB_REUSABLE,
    PIPELINE_FILES,
    ROOT,
    InstallResult,
    InstallStep,
    exbe_step,
    install_steps,
    load,
    run_install_step,
    script,
    steps,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PIP = ["-m", "pip", "install", "--disable-pip-version-check"]
DOCS = ROOT / "docs" / "pipelines.md"


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """A pipeline as an admin sets it up: ``configure(source, constraints)`` gives its install steps for a run in
    which the source (None: not set at all) and the constraints file (None: not set) are set the documented way."""

    name: str
    configure: Callable[[str | None, str | None], list[InstallStep]]
    setting: str          # what the refusal tells the admin to set
    unset_setting: str    # ... when nothing was set
    platform: dict[str, str]

    def __str__(self) -> str:
        return self.name


def _given(**values: str | None) -> dict[str, str]:
    return {name: value for name, value in values.items() if value is not None}


PIPELINES = [
    Pipeline("github reusable workflow",
             lambda source, constraints: install_steps(GITHUB_REUSABLE, inputs=_given(
                 **{"exbe-package": "" if source is None else source, "exbe-constraints": constraints})),
             "the workflow input exbe-package", "the workflow input exbe-package", {"GITHUB_ACTIONS": "true"}),
    Pipeline("github nightly",
             lambda source, constraints: install_steps(GITHUB_NIGHTLY, variables=_given(
                 EXBE_PACKAGE=source, EXBE_CONSTRAINTS=constraints)),
             "the repository variable EXBE_PACKAGE", "the repository variable EXBE_PACKAGE",
             {"GITHUB_ACTIONS": "true"}),
    Pipeline("azure release",
             lambda source, constraints: install_steps(AZURE_RELEASE, variables=_given(
                 EXBE_PACKAGE=source, EXBE_CONSTRAINTS=constraints)),
             "the template parameter exbePackage (release.yml: the pipeline variable EXBE_PACKAGE)",
             "the pipeline variable EXBE_PACKAGE", {"TF_BUILD": "True"}),
    Pipeline("azure nightly",
             lambda source, constraints: install_steps(AZURE_NIGHTLY, variables=_given(
                 EXBE_PACKAGE=source, EXBE_CONSTRAINTS=constraints)),
             "the pipeline variable EXBE_PACKAGE", "the pipeline variable EXBE_PACKAGE", {"TF_BUILD": "True"}),
    Pipeline("azure stage template",
             lambda source, constraints: install_steps(AZURE_STAGE, parameters=_given(
                 exbePackage="" if source is None else source, exbeConstraints=constraints)),
             "the template parameter exbePackage (release.yml: the pipeline variable EXBE_PACKAGE)",
             "the template parameter exbePackage (release.yml: the pipeline variable EXBE_PACKAGE)",
             {"TF_BUILD": "True"}),
]


#: The guard is the same text everywhere (tested below): its finer cases run on one pipeline of each platform.
ONE_PER_PLATFORM = [PIPELINES[1], PIPELINES[3]]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The repository an admin's pipeline checks out: exbe.yaml, a committed wheel and sdist, a constraints file,
    exbe vendored as a project directory, and -- to show a name is never taken for a path -- a project directory
    named ``exbe`` too."""
    root = tmp_path / "checkout"
    for name in ("exbe.yaml", "README.md", "constraints.txt", "pyproject.toml", "dist/exbe-1.2.0-py3-none-any.whl",
                 "dist/exbe-1.2.0.tar.gz", "tools/exbe/pyproject.toml", "exbe/pyproject.toml", "docs/index.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("", encoding="utf-8")
    return root


def _run(pipeline: Pipeline, checkout: Path, source: str | None, constraints: str | None = None,
         platform: dict[str, str] | None = None) -> list[InstallResult]:
    found = pipeline.configure(source, constraints)
    assert found, f"{pipeline}: no install step"
    return [run_install_step(step, checkout, platform=platform) for step in found]


def _refused(result: InstallResult) -> str:
    """The one line a refusal prints; asserts the step failed and pip never ran."""
    assert result.pip is None, f"pip was started: {result.pip}"
    assert result.returncode == 1
    assert len(result.lines) == 1, result.lines
    return result.lines[0]


def _says_what_to_set(line: str, setting: str) -> None:
    assert f"Set {setting} to " in line
    for example in ("git+https://github.com/contoso/exbe@<40-hex commit>", "./dist/exbe-1.2.0-py3-none-any.whl",
                    "a project directory (.)", '"Installing exbe"'):
        assert example in line


# --- names are refused ------------------------------------------------------------------------------------------

NAMES = ["exbe", "exbe==1.2", "exbe>=1", "EXBE", "exbe[sandbox]", "exbe ~= 1.2", "Exbe_Tools"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("pipeline", PIPELINES, ids=str)
def test_every_pipeline_refuses_to_install_exbe_by_name(pipeline: Pipeline, name: str, checkout: Path) -> None:
    for result in _run(pipeline, checkout, name):
        line = _refused(result)
        assert line.startswith(f"exbe not installed: {name.strip()!r} is a package name, which pip would look up on "
                               f"a package index, where anyone can publish it.")
        _says_what_to_set(line, pipeline.setting)


@pytest.mark.parametrize("pipeline", PIPELINES, ids=str)
def test_every_pipeline_refuses_to_run_when_no_source_is_set(pipeline: Pipeline, checkout: Path) -> None:
    for result in _run(pipeline, checkout, None):
        line = _refused(result)
        assert line.startswith(f"exbe not installed: {pipeline.unset_setting} is not set.")
        _says_what_to_set(line, pipeline.unset_setting)


@pytest.mark.parametrize("pipeline", PIPELINES, ids=str)
def test_the_refusal_is_an_error_annotation_on_the_pipelines_platform(pipeline: Pipeline, checkout: Path) -> None:
    annotation = "::error::" if "GITHUB_ACTIONS" in pipeline.platform else "##vso[task.logissue type=error]"
    for result in _run(pipeline, checkout, "exbe", platform=pipeline.platform):
        assert _refused(result).startswith(annotation + "exbe not installed: 'exbe' is a package name")


def test_the_admin_must_name_the_source_none_has_a_default() -> None:
    reusable = load(GITHUB_REUSABLE)["on"]["workflow_call"]["inputs"]["exbe-package"]
    assert reusable["required"] == "true" and "default" not in reusable
    [stage] = [p for p in load(AZURE_STAGE)["parameters"] if p["name"] == "exbePackage"]
    assert "default" not in stage
    # A call that names no source does not get as far as running (GitHub and Azure reject it) ...
    with pytest.raises(KeyError, match="inputs.exbe-package"):
        install_steps(GITHUB_REUSABLE)
    with pytest.raises(KeyError, match="parameters.exbePackage"):
        install_steps(AZURE_STAGE)
    # ... and the pipelines that call nothing read the documented variable, in every stage.
    assert [s.env["EXBE_PACKAGE"] for s in install_steps(AZURE_RELEASE)] == ["$(EXBE_PACKAGE)"] * 5
    assert [s.env["EXBE_PACKAGE"] for s in install_steps(AZURE_NIGHTLY)] == ["$(EXBE_PACKAGE)"]
    assert [s.env["EXBE_PACKAGE"] for s in install_steps(GITHUB_NIGHTLY, variables={"EXBE_PACKAGE": "x"})] == ["x"]


# --- what is accepted -------------------------------------------------------------------------------------------

PINNED_URLS = [
    f"git+https://github.com/contoso/exbe@{COMMIT}",
    f"git+https://dev.azure.com/contoso/infra/_git/exbe@{COMMIT.upper()}",
    f"git+ssh://git@git.contoso.local/infra/exbe.git@{COMMIT}",
    f"git+https://git.contoso.local/infra/tools@{COMMIT}#subdirectory=exbe",
]


@pytest.mark.parametrize("pipeline", PIPELINES, ids=str)
def test_every_pipeline_installs_a_git_url_pinned_to_a_full_commit(pipeline: Pipeline, checkout: Path) -> None:
    url = PINNED_URLS[0]
    for result in _run(pipeline, checkout, url):
        assert result.returncode == 0, result.lines
        assert result.pip == [sys.executable, *PIP, url]
        assert result.lines == [f"Installing exbe from {url}"]


@pytest.mark.parametrize("url", PINNED_URLS[1:])
@pytest.mark.parametrize("pipeline", ONE_PER_PLATFORM, ids=str)
def test_https_and_ssh_urls_on_any_git_host_are_accepted_pinned_to_a_full_commit(pipeline: Pipeline, url: str,
                                                                                  checkout: Path) -> None:
    for result in _run(pipeline, checkout, url):
        assert result.returncode == 0, result.lines
        assert result.pip == [sys.executable, *PIP, url]
        assert result.lines == [f"Installing exbe from {url}"]


@pytest.mark.parametrize("url", [
    "git+https://github.com/contoso/exbe@main",
    "git+https://github.com/contoso/exbe@v1.2.0",
    "git+https://github.com/contoso/exbe@0123456",
    "git+https://github.com/contoso/exbe",
    f"git+http://github.com/contoso/exbe@{COMMIT}",
    f"git://github.com/contoso/exbe@{COMMIT}",
    f"https://github.com/contoso/exbe/archive/{COMMIT}.zip",
    f"exbe @ git+https://github.com/contoso/exbe@{COMMIT}",
    f"git+https://github.com/contoso/exbe@{COMMIT} --index-url https://pypi.example/simple",
])
@pytest.mark.parametrize("pipeline", ONE_PER_PLATFORM, ids=str)
def test_a_url_that_can_move_or_is_not_a_pinned_git_url_is_refused(pipeline: Pipeline, url: str,
                                                                     checkout: Path) -> None:
    for result in _run(pipeline, checkout, url):
        line = _refused(result)
        assert f"is not a git+https:// or git+ssh:// URL pinned to a full 40-hex commit. Set {pipeline.setting}" \
            in line


@pytest.mark.parametrize(("pipeline", "path"), [
    *[(pipeline, path) for pipeline in PIPELINES for path in ("./dist/exbe-1.2.0-py3-none-any.whl", ".")],
    *[(pipeline, path) for pipeline in ONE_PER_PLATFORM
      for path in ("dist/exbe-1.2.0.tar.gz", "./tools/exbe", "tools\\exbe")],
], ids=str)
def test_a_wheel_sdist_or_project_directory_in_the_checkout_is_installed_by_its_absolute_path(
        pipeline: Pipeline, path: str, checkout: Path) -> None:
    if "\\" in path and sys.platform != "win32":
        (checkout / path).mkdir()
        (checkout / path / "pyproject.toml").write_text("", encoding="utf-8")  # on Linux that is one odd name
    for result in _run(pipeline, checkout, path):
        assert result.returncode == 0, result.lines
        assert result.pip is not None and result.pip[:-1] == [sys.executable, *PIP]
        installed = Path(result.pip[-1])
        assert installed.is_absolute()  # pip cannot take an absolute path for a name
        assert installed.resolve() == (checkout / path).resolve()


@pytest.mark.parametrize(("source", "reason"), [
    ("./dist/exbe-9.9.9-py3-none-any.whl", "'./dist/exbe-9.9.9-py3-none-any.whl' does not exist"),
    ("./README.md", "'./README.md' is not a wheel (.whl) or sdist (.tar.gz, .zip)"),
    ("./docs", "the directory './docs' has no pyproject.toml or setup.py"),
    ("-r requirements.txt", "'-r requirements.txt' is a pip option, not a source"),
    ("--index-url=https://pypi.example/simple", "'--index-url=https://pypi.example/simple' is a pip option"),
])
@pytest.mark.parametrize("pipeline", ONE_PER_PLATFORM, ids=str)
def test_a_path_or_option_that_is_not_an_installable_exbe_is_refused(pipeline: Pipeline, source: str, reason: str,
                                                                      checkout: Path) -> None:
    for result in _run(pipeline, checkout, source):
        line = _refused(result)
        assert line.startswith(f"exbe not installed: {reason}")
        _says_what_to_set(line, pipeline.setting)


# --- exbe's dependencies ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("pipeline", PIPELINES, ids=str)
def test_a_constraints_file_pins_exbes_dependencies(pipeline: Pipeline, checkout: Path) -> None:
    url = PINNED_URLS[0]
    for result in _run(pipeline, checkout, url, constraints="constraints.txt"):
        assert result.returncode == 0, result.lines
        assert result.pip is not None
        assert result.pip[:5] == [sys.executable, *PIP]
        assert result.pip[5] == "--constraint" and Path(result.pip[6]).is_absolute()
        assert Path(result.pip[6]).resolve() == (checkout / "constraints.txt").resolve()
        assert result.pip[7:] == [url]  # exbe's dependencies resolve normally: no --no-deps
    for result in _run(pipeline, checkout, url):  # not set: pip resolves the dependencies unpinned
        assert result.pip == [sys.executable, *PIP, url]
    for result in _run(pipeline, checkout, url, constraints="pins.txt"):
        line = _refused(result)
        assert line.startswith("exbe not installed: the constraints file 'pins.txt' does not exist. Set ")
        assert "to a pip constraints file in the checkout (constraints.txt), or leave it empty" in line


# --- one guard, in every pipeline, before exbe runs -------------------------------------------------------------

def _all_install_steps() -> list[InstallStep]:
    return [found for path in PIPELINE_FILES
            for found in install_steps(path, parameters={"exbePackage": "."}, inputs={"exbe-package": "."})]


def test_every_pipeline_file_runs_the_same_install_guard() -> None:
    found = _all_install_steps()
    assert {f.where.split()[0] for f in found} == {path.name for path in PIPELINE_FILES}
    assert len({f.script for f in found}) == 1, "the install guards differ between pipelines"


@pytest.mark.parametrize("path", [AZURE_STAGE, AZURE_NIGHTLY, GITHUB_REUSABLE, GITHUB_NIGHTLY], ids=lambda p: p.name)
def test_the_install_step_runs_before_exbe_and_its_failure_stops_the_job(path: Path) -> None:
    document = load(path)
    [install] = [step for _, step in steps(document) if re.search(r"\bpip\b", script(step))]
    _, exbe, _ = exbe_step(document)
    ordered = [step for _, step in steps(document)]
    assert ordered.index(install) < ordered.index(exbe)
    for key in ("condition", "if", "continue-on-error", "continueOnError"):
        assert key not in install, f"{path.name}: the install step has {key}"
    if "task" in install:
        assert install["task"] == "PythonScript@0" and install["inputs"]["scriptSource"] == "inline"
    else:
        assert install["shell"] == "python"


def test_the_guard_holds_no_text_a_platform_would_expand_before_python_reads_it() -> None:
    guard = _all_install_steps()[0].script
    for syntax in ("$(", "${{", "$["):  # Azure macros and runtime expressions, GitHub and Azure template expressions
        assert syntax not in guard


_PIP_INSTALL = re.compile(r"\bpip3?(?:\.exe)?\s+install\b(?P<rest>.*)", re.IGNORECASE)
_EXBE_BY_NAME = re.compile(r"exbe(?:\[[^\]]*\])?\s*(?:[<>=!~;].*)?", re.IGNORECASE)


def _installs_exbe_by_name(line: str) -> bool:
    """Whether a command line runs ``pip install`` with exbe as a bare requirement (name or name specifier)."""
    match = _PIP_INSTALL.search(line)
    if not match:
        return False
    tokens = [token.strip("'\"") for token in re.findall(r"\"[^\"]*\"|'[^']*'|\S+", match.group("rest"))]
    return any(_EXBE_BY_NAME.fullmatch(token) for token in tokens if not token.startswith("-"))


def test_the_bare_name_scan_recognises_the_install_lines_it_is_for() -> None:
    assert _installs_exbe_by_name("python -m pip install --disable-pip-version-check exbe")
    assert _installs_exbe_by_name('pip install "exbe==1.2"')
    assert _installs_exbe_by_name("pip3 install -U 'exbe>=1' junit-xml")
    assert not _installs_exbe_by_name(f"pip install git+https://github.com/contoso/exbe@{COMMIT}")
    assert not _installs_exbe_by_name("pip install ./dist/exbe-1.2.0-py3-none-any.whl")


@pytest.mark.parametrize("path", PIPELINE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_pipeline_file_pip_installs_exbe_by_name(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [line for line in lines if _installs_exbe_by_name(line)] == []
    guard = _all_install_steps()[0].script
    for _, step in steps(load(path)):
        if re.search(r"\bpip\b", script(step)):
            assert script(step) == guard, f"{path.name}: a step runs pip outside the install guard"


# --- the documentation -------------------------------------------------------------------------------------------

def _docs_section(heading: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    assert f"\n## {heading}\n" in text, f"docs/pipelines.md has no section '## {heading}'"
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_the_docs_say_how_to_publish_and_pin_exbe_for_the_pipelines() -> None:
    # The refusal and the YAML comments point at this section.
    section = _docs_section("Installing exbe")
    assert '"Installing exbe" in exbe\'s docs/pipelines.md' in _all_install_steps()[0].script
    # Every setting a pipeline reads is named there ...
    settings = {re.findall(r"\S+$", value.split(" (")[0])[0] for found in _all_install_steps()
                for name, value in found.env.items() if name.endswith("_SETTING")}
    assert settings == {"exbe-package", "exbe-constraints", "EXBE_PACKAGE", "EXBE_CONSTRAINTS", "exbePackage",
                        "exbeConstraints"}
    for setting in settings:
        assert f"`{setting}`" in section, setting
    # ... with the forms accepted, how to publish exbe in each, and how to pin its dependencies.
    for text in ("git+https://", "full** commit", ".whl", "`.`", "pip wheel --no-deps", "pip freeze --exclude exbe",
                 "--constraint", "PIP_INDEX_URL", "--extra-index-url", "exbe==1.2"):
        assert text in section, text


def test_the_refusal_the_docs_show_is_the_one_the_guard_prints(checkout: Path) -> None:
    [result] = _run(PIPELINES[1], checkout, "exbe==1.2")  # github nightly, the repository variable
    assert f"```\n{_refused(result)}\n```" in _docs_section("Installing exbe")
