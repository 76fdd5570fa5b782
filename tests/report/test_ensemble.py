import math

import numpy as np
import pytest

from reglab.report import write_ensemble, write_report

from ..conftest import train


@pytest.mark.slow
def test_ensemble_vs_best_member(tmp_path):
    sweep = tmp_path / "sweep"
    accs = []
    for seed in (1, 2, 3):
        s = train(
            ["trainer.max_epochs=2", "callbacks=model_checkpoint", "logger=csv", f"seed={seed}"],
            sweep / f"{seed}_baseline",
        )
        accs.append(s["test/acc"])
    (entry,) = write_ensemble(sweep)
    members = sorted(m["test/acc"] for m in entry["members"])
    # Each member, re-evaluated from its checkpoint, scores what its run reported.
    np.testing.assert_allclose(members, sorted(accs), atol=1e-6)
    assert entry["best_member"] == max(members) and 0.5 < entry["ensemble"]["test/acc"] <= 1.0
    report = write_report(sweep, quiet=True)
    row = report.ensemble.iloc[0]
    assert row["members"] == 3 and math.isclose(
        row["best member test/acc"], max(accs), abs_tol=1e-6
    )
    md = (sweep / "report.md").read_text()
    assert "## Ensembles" in md and f"{entry['ensemble']['test/acc']:.4f}" in md
