import nbformat
from nbclient import NotebookClient

from reglab.core.paths import ROOT_DIR

from .report.conftest import BASE, L2, write_run


def test_compare_techniques_notebook_executes(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    for i, (b, l2) in enumerate(zip(BASE, L2, strict=True)):
        write_run(sweep, f"{i}_baseline", "baseline", b, seed=i)
        write_run(sweep, f"{i + 3}_l2", "l2", l2, seed=i)
    write_run(sweep, "6_l1", "l1", None)
    monkeypatch.setenv("REGLAB_REPORT_DIR", str(sweep))
    nb = nbformat.read(ROOT_DIR / "notebooks" / "compare_techniques.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1  # one figure (three panels) for the one setting
    text = "".join(
        str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs
    )
    assert "7 runs, 1 failed" in text and "l2" in text and "boom: diverged" in text
