"""tools/plant.py: every planted wrong result still finds its snippet, and names tests that exist."""

from conftest import ROOT

from tools import plant


def test_every_plant_finds_its_snippet_once_and_names_existing_tests():
    assert plant.check_snippets(plant.PLANTS, ROOT) == []
    for p in plant.PLANTS:
        named = [arg for arg in p.tests if arg.startswith("tests/")]
        assert plant.existing_args(p.tests, ROOT) and len([a for a in plant.existing_args(p.tests, ROOT)
                                                            if a.startswith("tests/")]) == len(named), p.name
    assert len({p.name for p in plant.PLANTS}) == len(plant.PLANTS)


def test_no_plant_counts_as_killed_by_the_demo_s_figures_alone():
    """The demo's pinned figures are a last net, compared only on one CPU type: every plant names a test of
    its behaviour, and never the demo's."""
    for p in plant.PLANTS:
        assert not any(arg.startswith("tests/test_demo.py") for arg in p.tests), p.name
