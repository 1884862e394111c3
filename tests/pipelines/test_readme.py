"""The README's examples are today's output: the deterministic ones are re-run here."""

from __future__ import annotations

from examples import readme


def test_deterministic_examples_are_todays_output():
    problems = readme.check(readme.README.read_text())
    assert not problems, "\n\n".join(problems)


def test_a_drifted_example_is_caught():
    text = readme.README.read_text()
    body = readme.regions(text)["plan-colpali"]
    drifted = readme.replace(text, "plan-colpali", body.replace("1,061", "1,112"))
    problems = readme.check(drifted)
    assert len(problems) == 1 and "plan-colpali" in problems[0] and "+mv-bf16" in problems[0]


def test_the_layout_of_the_code_names_every_module():
    """README's "Layout of the code" names every module of the project's folders, by its name in
    backquotes, in its own folder's entry (a folder's entry is the bullet that names the folder,
    down to the next bullet)."""
    import re

    text = readme.README.read_text()
    section = text[text.index("## Layout of the code"):]
    section = section[:section.find("\n## ", 3) if "\n## " in section[3:] else len(section)]
    entries = {}  # folder -> the names in its bullet
    for bullet in re.split(r"\n\s*- ", section)[1:]:
        head = re.match(r"`([\w/]+/)`", bullet)
        if head:
            entries[head.group(1)] = set(re.findall(r"`([\w.]+)`", bullet))
    missing = []
    for folder in ("operators", "pipelines", "benchmarks", "examples", "tests"):
        for p in sorted((readme.REPO / folder).rglob("*.py")):
            if p.stem == "__init__":
                continue
            room = p.parent.relative_to(readme.REPO).as_posix() + "/"
            if p.stem not in entries.get(room, set()):
                missing.append(f"{room}{p.name}")
    assert not missing, f"modules missing from their folder's entry in README's Layout of the code: {missing}"
