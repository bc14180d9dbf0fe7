"""The docs stay true to the code and to the repository: the configuration table is generated,
every relative link resolves, and nothing points at a document outside the repository."""

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Documents that live outside the repository, which a user of it never sees. Spelled in two
# pieces so that this file does not match itself.
OUTSIDE = ("REFERENCE" + ".md", "DESIGN" + ".md", "../" + "shared/", "/work" + "/shared")


def _repository_files() -> list[Path]:
    """Tracked files and new files git does not ignore (what the next commit would hold)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    return [REPO / name for name in listed if name and (REPO / name).is_file()]


def test_no_file_refers_outside_the_repository():
    files = _repository_files()
    assert REPO / "README.md" in files and REPO / "tests" / "test_docs.py" in files
    found = []
    for path in files:
        text = path.read_bytes()
        for line_no, line in enumerate(text.splitlines(), 1):
            found += [
                f"{path.relative_to(REPO)}:{line_no}: {name}"
                for name in OUTSIDE
                if name.encode() in line
            ]
    assert not found, (
        "these refer to documents outside the repository; cite the original source or "
        "docs/reference.md instead:\n" + "\n".join(found)
    )


def _links(markdown: str) -> list[str]:
    """Targets of [text](target) and ![alt](target), outside code blocks and code spans."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    return re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)


def test_links_finds_file_and_anchor_links_but_not_code():
    text = (
        "[a](docs/x.md) ![b](img.png) [c](#top) [d](y.md#part)\n"
        "`[e](no.md)`\n```\n[f](no2.md)\n```\n"
    )
    assert _links(text) == ["docs/x.md", "img.png", "#top", "y.md#part"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_files_that_exist(doc):
    missing = []
    for target in _links(doc.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, or an anchor in the same page (files only are checked)
        path = target.split("#")[0]
        if not (doc.parent / path).exists():
            missing.append(target)
    assert not missing, f"{doc.relative_to(REPO)} links to files that do not exist: {missing}"


def test_readme_links_to_every_docs_page():
    readme = (REPO / "README.md").read_text()
    unlinked = [p.name for p in DOCS[1:] if f"(docs/{p.name}" not in readme]
    assert not unlinked, f"README.md does not link to {unlinked}"


def _block(text: str, marker: str) -> str:
    assert f"<!-- {marker} -->\n" in text, f"no <!-- {marker} --> block"
    return text.split(f"<!-- {marker} -->\n")[1].split(f"\n<!-- /{marker} -->")[0]


def test_generated_blocks_are_what_the_code_generates(tmp_path):
    """The README's variant table and the config table follow the registry and the config:
    `make docs` rewrites them; here, a stale copy fails and `make docs`'s rewrite is exact."""
    from danet import generated_docs

    stale = generated_docs.stale()
    assert not stale, f"{[str(p.relative_to(REPO)) for p in stale]} stale: run `make docs`"
    for (name, marker), make in generated_docs.BLOCKS.items():
        assert _block((REPO / name).read_text(), marker) == make()
    # a stale block (a variant added, the README not regenerated) is found and rewritten
    (tmp_path / "docs").mkdir()
    for name, _ in generated_docs.BLOCKS:
        (tmp_path / name).write_text((REPO / name).read_text())
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("| `cam` |", "| `old` |"))
    (changed,) = generated_docs.stale(tmp_path)
    assert changed == readme and "| `old` |" not in generated_docs.stale(tmp_path)[readme]


def test_configuration_table_has_every_key_with_its_default_and_comment():
    from danet import config as C
    from danet.config_doc import config_table

    table = config_table()
    keys = re.findall(r"^\| `([a-z_.]+)` \|", table, flags=re.M)
    assert keys == list(C.flat_keys())
    row = next(line for line in table.splitlines() if "`train.keep_freed_memory`" in line)
    assert row == (
        "| `train.keep_freed_memory` | `bool` | `true` "
        "| glibc: reuse freed blocks, do not refault them (exact) |"
    )
    row = next(line for line in table.splitlines() if "`data.base_size`" in line)
    assert "| `int \\| tuple[int, int]` | `0` | training rescale reference, x a random" in row


def test_field_comments_reads_trailing_then_leading_comments():
    from danet.config_doc import field_comments

    source = """
@dataclass
class Part:
    a: int = 1  # trailing
    # first line
    # second line
    b: str = "x"  # wins over the lines above
    # above only,
    # in two lines
    c: tuple[int, ...] = (
        1,
        2,
    )  # on the last line

    d: bool = True
    s: str = "# not a comment"
"""
    assert field_comments(source) == {
        ("Part", "a"): "trailing",
        ("Part", "b"): "wins over the lines above",
        ("Part", "c"): "on the last line",
        ("Part", "d"): "",
        ("Part", "s"): "",
    }
    assert field_comments(source.replace("  # on the last line", ""))[("Part", "c")] == (
        "above only, in two lines"
    )


README_MAX_LINES = 400  # a newcomer reads it in ten minutes; details live in docs/


def test_readme_stays_short():
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details to docs/"


def test_worked_example_run_ids_are_what_the_default_grid_gives():
    """The worked example's `make sweep` output names the run folders a fresh clone makes: a
    new config key must not change the ids of the runs a user already has."""
    from slurm.grid import expand, load_grid

    readme = (REPO / "docs" / "worked-example.md").read_text()
    example = readme[readme.index("$ make sweep") :].split("```")[0]
    shown = re.findall(r"^  start  (\S+)  job", example, flags=re.M)
    grid = load_grid(REPO / "experiments" / "ablation.yaml")
    assert sorted(shown) == sorted(s.run_id for s in expand(grid, REPO / "runs"))
