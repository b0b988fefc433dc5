"""Sphinx configuration: furo, MyST Markdown, autodoc, and a local extension (``_ext``) that
draws the phase diagram from ``liqcore.state.TRANSITIONS`` and executes the walkthrough.

Nothing here needs the network: intersphinx is off, formulas are plain text (no MathJax),
the diagram is inline SVG (no graphviz).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
# Document the checkout being built, installed or not.
sys.path.insert(0, str(HERE.parent))

project = "liqcore"
author = "liqcore developers"
copyright = "liqcore developers"
release = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "liqdocs",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store", "**/.ipynb_checkpoints"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"ignore-module-all": True}

# A module listed on the API page that does not exist fails the -W build. Set to False
# while modules are being written: they then show as "not written yet" instead.
liq_api_strict = True

html_theme = "furo"
html_title = "liqcore"
html_static_path = ["_static"]
html_css_files = ["liq.css"]
html_show_sourcelink = False
