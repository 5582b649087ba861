"""The notebook example: its .ipynb is the jupytext form of its .py, and it runs and learns."""
from __future__ import annotations

import pathlib
import re

import jupytext
import nbclient
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "notebook_barlow_twins.py"
NOTEBOOK = SCRIPT.with_suffix(".ipynb")


def _sources(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def test_the_ipynb_is_generated_from_the_script():
    """One source of truth: ``jupytext --to ipynb experiments/notebook_barlow_twins.py`` rebuilds it."""
    assert _sources(nbformat.read(NOTEBOOK, as_version=4)) == _sources(jupytext.read(SCRIPT))


@pytest.mark.slow
def test_the_notebook_runs_and_learns(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    losses = [float(x) for x in re.findall(r"^step +\d+  loss ([\d.]+)", text, re.MULTILINE)]
    after, before = map(float, re.search(r"kNN top-1 after 30 steps: ([\d.]+)% \(at initialisation ([\d.]+)%\)",
                                         text).groups())
    assert len(losses) >= 2 and losses[-1] < 0.8 * losses[0], losses
    assert after > 10 + 10 and after > before, (after, before)  # chance is 10% on CIFAR-10
