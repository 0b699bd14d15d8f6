"""Every command and example in README.md, docs/*.md and results/README.md stays true.

- Shell blocks: every command line (backslash continuations joined, comments dropped, the block's own
  `NAME="..."` variables expanded) parses with the real command line: `autoguidance ...`, `python -m
  autoguidance ...` and `torchrun ... -m autoguidance ...` through the click group's subcommand
  (`make_context`, so unknown flags, bad choices and missing required options fail without running
  anything); `make TARGET` names a Makefile target; `python benchmarks/X.py` names a script that has
  every flag given; `python -m autoguidance.MODULE` names a runnable module; `pip install -e
  '.[extras]'` names extras that exist.
- Python blocks compile, and every `from autoguidance... import name` exists.
- JSON blocks parse; a sweep file (one with a "grid") passes the sweep parser.
- The README's API example, and every block marked `<!-- doc-test: run -->`, runs in a temporary
  folder on tiny networks saved under the file names it loads.
- Relative links and images point at files (and headings) that exist, every figure in docs/ is shown
  somewhere, and the README stays short.

Nothing here trains or samples more than a few tiny images.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import torch

from autoguidance import save_network
from autoguidance.cli import cli
from autoguidance.nets.precond import build
from autoguidance.nets.presets import preset_config
from autoguidance.sweeps.configs import parse_sweep

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "results" / "README.md"]
RUN_MARKER = "<!-- doc-test: run -->"
README_MAX_LINES = 200

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marked_run: bool

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a markdown page, with the language and the line they start on."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        marked = start > 0 and lines[start - 1].strip() == RUN_MARKER
        blocks.append(Block(page, start + 1, m.group(1).lower(), "\n".join(body) + "\n", marked))
        i += 1
    return blocks


BLOCKS = [b for page in PAGES for b in code_blocks(page)]


def _ids(blocks: list[Block]) -> list[str]:
    return [b.where for b in blocks]


# --- shell commands ---------------------------------------------------------------------------------------


def shell_commands(block: Block) -> list[list[str]]:
    """The block's commands as argument lists: continuations joined, comments dropped, the block's own
    variables (NAME="...") expanded as the shell would (unquoted: split into words)."""
    joined = re.sub(r"\\\n", " ", block.text)
    variables: dict[str, str] = {}
    commands = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assignment = re.fullmatch(r"([A-Za-z_]\w*)=(.*)", line)
        if assignment:
            variables[assignment.group(1)] = " ".join(shlex.split(assignment.group(2), comments=True))
            continue
        words = shlex.split(expand_variables(line, variables, block.where), comments=True)
        if words:
            commands.append(words)
    return commands


def expand_variables(line: str, variables: dict[str, str], where: str) -> str:
    """$NAME and ${NAME} replaced by the block's values; a variable the block does not set fails."""

    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in variables:
            raise AssertionError(f"{where}: ${name} is not set in this block: {line}")
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, line)


def autoguidance_args(words: list[str]) -> list[str] | None:
    """The arguments after `autoguidance`, `python -m autoguidance` or `torchrun ... -m autoguidance`."""
    if words[0] == "autoguidance":
        return words[1:]
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] in ("autoguidance", "autoguidance.cli"):
            return words[i + 2 :]
    return None


def check_cli(args: list[str], where: str) -> None:
    assert args, f"{where}: `autoguidance` without a command"
    name, rest = args[0], args[1:]
    command = cli.commands.get(name)
    assert command is not None, f"{where}: no command {name!r} (commands: {', '.join(sorted(cli.commands))})"
    if "--help" in rest or "-h" in rest:
        return
    try:
        command.make_context(name, list(rest))
    except click.ClickException as exc:  # UsageError, BadParameter, NoSuchOption, MissingParameter
        pytest.fail(f"{where}: autoguidance {' '.join(args)}\n  {exc.format_message()}")


def check_make(words: list[str], where: str) -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in words[1:]:
        assert re.search(rf"^{re.escape(target)}\s*:", makefile, re.M), f"{where}: no make target {target!r}"


def check_benchmark(words: list[str], where: str) -> None:
    script = ROOT / words[1]
    assert script.is_file(), f"{where}: no script {words[1]}"
    source = script.read_text()
    for word in words[2:]:
        if word.startswith("--"):
            flag = word.split("=")[0]
            assert f'"{flag}"' in source, f"{where}: {words[1]} has no option {flag}"
    if "add_subparsers" in source:
        sub = words[2] if len(words) > 2 else None
        assert sub is not None and f'add_parser("{sub}"' in source, (
            f"{where}: {words[1]} has no command {sub!r}"
        )


def check_module_main(module: str, where: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"{where}: no module {module}"
    assert 'if __name__ == "__main__":' in Path(spec.origin).read_text(), f"{where}: {module} is not runnable"


def check_pip(words: list[str], where: str) -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for word in words:
        m = re.fullmatch(r"(?:\.|autoguidance)\[([\w,-]+)\]", word)
        if m:
            unknown = set(m.group(1).split(",")) - extras
            assert not unknown, f"{where}: no extras {sorted(unknown)} (extras: {', '.join(sorted(extras))})"


SHELL_BLOCKS = [b for b in BLOCKS if b.lang in ("sh", "bash", "shell", "console")]


def test_pages_have_commands_to_check():
    assert SHELL_BLOCKS and len(PAGES) >= 10


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=_ids(SHELL_BLOCKS))
def test_shell_commands_run_as_written(block):
    commands = shell_commands(block)
    assert commands, f"{block.where}: an empty shell block"
    for words in commands:
        args = autoguidance_args(words)
        if args is not None:
            check_cli(args, block.where)
        elif words[0] == "make":
            check_make(words, block.where)
        elif words[0] == "python" and len(words) > 1 and words[1].startswith("benchmarks/"):
            check_benchmark(words, block.where)
        elif words[0] == "pip":
            check_pip(words, block.where)
        elif words[0] == "export":  # thread settings for what follows
            assert all(re.fullmatch(r"[A-Z_]+=\S+", w) for w in words[1:]), f"{block.where}: {words}"
        elif words[:2] == ["python", "-m"] and words[2].startswith("autoguidance."):
            check_module_main(words[2], block.where)
        elif words[0] == "optuna-dashboard":  # opens a committed store
            assert words[1].startswith("sqlite:///"), f"{block.where}: {' '.join(words)}"
            store = ROOT / words[1].removeprefix("sqlite:///")
            assert store.is_file(), f"{block.where}: no store {words[1]}"
        else:
            pytest.fail(f"{block.where}: a command this test cannot check: {' '.join(words)}")


def test_command_parsing_catches_mistakes():
    """The check above is not vacuous: what a typo in the docs would look like fails it."""
    for bad in (
        ["generate", "--net", "a.safetensors", "--guidance", "2", "--no-such-flag", "--out", "x"],
        ["generate", "--net", "a.safetensors", "--solver", "rk4", "--out", "x"],  # a bad choice
        ["generate", "--net", "a.safetensors"],  # --out is required
        ["train", "--preset", "s", "--duration", "64", "--out", "x"],  # --dataset is required
        ["experiment", "table2", "--out", "x"],  # not an experiment
    ):
        with pytest.raises(pytest.fail.Exception):
            check_cli(bad, "test")
    with pytest.raises(AssertionError):
        check_cli(["no-such-command"], "test")


# --- Python and JSON blocks -------------------------------------------------------------------------------

PYTHON_BLOCKS = [b for b in BLOCKS if b.lang == "python"]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=_ids(PYTHON_BLOCKS))
def test_python_blocks_compile_and_import_what_exists(block):
    tree = ast.parse(block.text, filename=block.where)
    compile(tree, block.where, "exec")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "autoguidance":
            module = importlib.import_module(node.module)
            for alias in node.names:
                exists = hasattr(module, alias.name)
                if not exists:  # a submodule: from autoguidance.io import edm2
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                        exists = True
                    except ImportError:
                        pass
                assert exists, f"{block.where}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "autoguidance":
                    importlib.import_module(alias.name)


JSON_BLOCKS = [b for b in BLOCKS if b.lang == "json"]


@pytest.mark.parametrize("block", JSON_BLOCKS, ids=_ids(JSON_BLOCKS))
def test_json_blocks_parse(block):
    spec = json.loads(block.text)
    if isinstance(spec, dict) and "grid" in spec:
        assert parse_sweep(spec, block.where)["configs"]


# --- examples that run ------------------------------------------------------------------------------------


def _tiny_networks(source: str, folder: Path) -> None:
    """Save a tiny class-conditional network (preset xxs, 8x8, 1 channel, 10 classes) under every
    runs/....safetensors name the example loads; gains set so that guidance changes the images."""
    names = sorted(set(re.findall(r"[\"'](runs/[^\"']+\.safetensors)[\"']", source)))
    for i, name in enumerate(names):
        torch.manual_seed(i)
        net = build(preset_config("xxs", 8, 1, 10))
        with torch.no_grad():
            for p in net.parameters():
                if p.ndim == 0:
                    p.fill_(1.0)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        save_network(folder / name, net)


def _run_example(block: Block, folder: Path) -> dict:
    _tiny_networks(block.text, folder)
    namespace = {"__name__": "__doc_example__"}
    exec(compile(block.text, block.where, "exec"), namespace)
    for png in re.findall(r"[\"']([^\"']+\.png)[\"']", block.text):
        assert (folder / png).is_file(), f"{block.where}: the example did not write {png}"
    return namespace


def readme_api_example() -> Block:
    blocks = [
        b for b in BLOCKS if b.page.name == "README.md" and b.page.parent == ROOT and b.lang == "python"
    ]
    assert blocks, "README.md has no Python example"
    return blocks[0]


def test_readme_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    block = readme_api_example()
    assert len(block.text.strip().splitlines()) <= 12, "the README's example should stay about 10 lines"
    namespace = _run_example(block, tmp_path)
    images, labels = namespace["images"], namespace["labels"]
    assert images.shape == (16, 8, 8, 1) and images.dtype == torch.uint8
    assert labels.shape == (16,)


MARKED = [b for b in BLOCKS if b.marked_run]


@pytest.mark.parametrize("block", MARKED, ids=_ids(MARKED))
def test_marked_examples_run(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run_example(block, tmp_path)


# --- links, figures, length -------------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation (backticks too) dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    out, seen, fenced = set(), {}, False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # not inside code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # nor inside inline code
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_links_point_at_what_exists(page):
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.relative_to(ROOT)}: broken link {target}"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), (
                f"{page.relative_to(ROOT)}: no heading #{anchor} in {file.relative_to(ROOT)}"
            )


def test_every_figure_is_shown():
    shown = {(page.parent / t.partition("#")[0]).resolve() for page in PAGES for t in links(page)}
    for png in sorted((ROOT / "docs").glob("*.png")):
        assert png.resolve() in shown, f"docs/{png.name} is not shown on any page"


def test_readme_stays_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"
