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
    """README's "Layout of the code" names every module of the project's folders (by its name in
    backquotes)."""
    import re

    text = readme.README.read_text()
    section = text[text.index("## Layout of the code"):]
    section = section[:section.find("\n## ", 3) if "\n## " in section[3:] else len(section)]
    named = set(re.findall(r"`([\w.]+)`", section))
    modules = {p.stem for folder in ("operators", "pipelines", "benchmarks", "examples", "tests")
               for p in (readme.REPO / folder).rglob("*.py") if p.stem != "__init__"}
    assert modules - named == set(), "modules missing from README's Layout of the code"
