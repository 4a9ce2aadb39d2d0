"""The README and docs/: short, every file they name exists, no requirement ids or section numbers in the code."""

import re

from conftest import ROOT

REPO_FOLDERS = ("tests", "pipeline", "docs", "bench", "tools", "configs")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "RESULTS.md"]


def test_the_readme_is_short_and_the_details_live_in_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for topic in ("data", "backbones", "model-selection", "reliability", "performance", "design", "development",
                  "requirements"):
        assert f"(docs/{topic}.md)" in readme, topic


def test_every_file_the_docs_name_exists():
    missing = []
    for doc in DOCS:
        text = doc.read_text()
        for link in re.findall(r"\]\(([^)#\s]+)\)", text):
            if not link.startswith("http") and not (doc.parent / link).exists():
                missing.append(f"{doc.name}: {link}")
        for name in re.findall(r"`([\w./-]+\.(?:py|md|json|png))`", text):
            if "/" in name and name.split("/")[0] in REPO_FOLDERS and not (ROOT / name).exists():
                missing.append(f"{doc.name}: {name}")
            elif "/" not in name and name.endswith(".py") and not any((ROOT / folder / name).exists()
                                                                       for folder in ("", *REPO_FOLDERS)):
                missing.append(f"{doc.name}: {name}")  # a module or test named alone
    assert missing == []


def test_no_file_cites_the_spec_s_own_files_and_code_keeps_reasons_in_words():
    code = [p for p in ROOT.rglob("*.py") if ".venv" not in p.parts and "tests" not in p.parts]
    assert [str(p) for p in code + DOCS if "NOTES.md" in p.read_text()] == []
    assert [str(p.relative_to(ROOT)) for p in code if re.search(r"REQ-[A-Z]-\d", p.read_text())] == []
    assert [str(p.relative_to(ROOT)) for p in code + DOCS if re.search(r"design\.md \d", p.read_text())] == []


def test_readme_commands_use_the_flags_as_they_are():
    readme = (ROOT / "README.md").read_text()
    assert "--resume true" not in readme and "--skip_bad_images true" not in readme
