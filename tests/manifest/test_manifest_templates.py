"""``{placeholder}`` templates: names, literal braces, escaping, unmatched braces."""

from __future__ import annotations

import pytest

from gcbatch.manifest import TemplateError, render_template, template_names


def test_templates() -> None:
    assert template_names("scan-{stem}{{x}}-{ item.pk }") == ["stem", "item.pk"]
    assert render_template("{{a}}-{stem}", {"stem": "p[1]"}) == "{a}-p[1]"
    assert render_template("{stem}", {"stem": "p[1]"}, lambda v: v.upper()) == "P[1]"
    for bad in ("{", "a}", "{a{b}}"):
        with pytest.raises(TemplateError):
            template_names(bad)
