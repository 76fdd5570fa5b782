from .report.conftest import BASE, L2, run_notebook, write_run


def test_compare_techniques_notebook_executes(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    for i, (b, l2) in enumerate(zip(BASE, L2, strict=True)):
        write_run(sweep, f"{i}_baseline", "baseline", b, seed=i)
        write_run(sweep, f"{i + 3}_l2", "l2", l2, seed=i)
    write_run(sweep, "6_l1", "l1", None)
    images, text = run_notebook(sweep, tmp_path, monkeypatch)
    assert len(images) == 1  # one figure (three panels) for the one setting
    assert "7 runs, 1 failed" in text and "l2" in text and "boom: diverged" in text
