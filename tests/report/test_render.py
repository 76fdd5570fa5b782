import json

import pandas as pd

from reglab.report.cli import main

from .conftest import SEEDS, TRIALS, protocol_json, run_notebook, write_protocol_sweep, write_trial


def section(md: str, title: str) -> str:
    return md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_protocol_report_says_what_held_up_and_what_did_not(protocol_sweep, capsys):
    # Pruned trials are no failures: the exit status stays 0.
    assert main([str(protocol_sweep)]) == 0
    md = (protocol_sweep / "report.md").read_text()
    assert "44 runs: 42 finished, 2 pruned, 0 failed" in md
    # The ranked table comes first, then how to read it, then the protocol's sections and plots.
    order = [md.index(s) for s in ("## digits/mlp", "## How to read this", "## Tuning",
                                   "## Best combination", "## Plots")]  # fmt: skip
    assert order == sorted(order)
    table = section(md, "digits/mlp")
    assert "| 3 | dropout | 5 | 0.9200 ± 0.0071 | +0.0100 [+0.0002, +0.0198] | 0.0474 | 0.0948 | ns |" in table  # fmt: skip
    assert "| 2 | l2 | 5 | 0.9380 ± 0.0097 |" in table and "| l2.strength=0.0001 |" in table
    assert "| 4 | early_stopping | 5 |" in table and "| 0.50 [0.50, 0.50] |" in table
    # The plain sentences: nothing that failed to reproduce is left out.
    assert "**Better than the baseline** after Holm's correction for 5 comparisons: cocktail (" in table  # fmt: skip
    assert "**Worse than the baseline**: flip (-0.0360" in table
    assert "**Identical to the baseline on every seed**" in table and "early_stopping." in table
    assert "**Significant alone, not after the correction**: dropout (p = 0.0474, Holm 0.0948)" in table  # fmt: skip
    assert "not shown better on test** (did not reproduce): dropout (val +0.0120 in tuning" in table  # fmt: skip
    assert "Holm" in section(md, "How to read this")

    tuning = section(md, "Tuning")
    assert "| digits/mlp | l2 | 4 (1 pruned) | strength | l2.strength=0.0001 | 0.9450 | +0.0150 |" in tuning  # fmt: skip
    best = section(md, "Best combination vs best single technique vs baseline")
    assert "| best single technique | l2 (l2.strength=0.0001) | 5 | 0.9380 ± 0.0097 |" in best
    assert "| best combination | cocktail (dropout+l2: l2.strength=0.0001, dropout.p=0.3) |" in best
    assert "Combination − l2: +0.0040 [" in best and f"paired over {len(SEEDS)} seeds" in best
    assert "**the combination is not shown to differ from the best single technique**" in best
    assert "![strength_response.png](strength_response.png)" in md
    assert "![train_val_curves.png](train_val_curves.png)" in md

    results = pd.read_csv(protocol_sweep / "results.csv")
    assert len(results) == 6 and results.loc[results["technique"] == "l2", "tuned"].item() == (
        "l2.strength=0.0001"
    )
    tuned = pd.read_csv(protocol_sweep / "tuning.csv").set_index("technique")
    assert tuned.loc["dropout", "trials"] == 4 and tuned.loc["dropout", "pruned"] == 1
    runs = pd.read_csv(protocol_sweep / "runs.csv")
    assert {"stage", "trial", "study", "regularizer.l2.strength"} <= set(runs.columns)
    out = capsys.readouterr().out
    assert "dropout" in out and "Significant alone, not after the correction" in out


def test_the_report_is_byte_stable(protocol_sweep, fixed_sweep):
    for sweep in (protocol_sweep, fixed_sweep):
        main([str(sweep), "--quiet"])
        first = {n: (sweep / n).read_bytes() for n in ("report.md", "results.csv", "runs.csv")}
        main([str(sweep), "--quiet"])
        assert first == {n: (sweep / n).read_bytes() for n in first}


def test_a_tuning_only_sweep_reports_its_trials(tmp_path):
    sweep = write_protocol_sweep(tmp_path / "sweep", with_protocol_json=False)
    for stage in ("test", "cocktail_test"):
        for m in (sweep / stage).rglob("metrics.json"):
            m.unlink()
    assert main([str(sweep), "--quiet"]) == 0
    md = (sweep / "report.md").read_text()
    assert "No test-stage run finished yet" in md
    # Without stage 2 and protocol.json the tuned value is the best finished trial's.
    assert "| digits/mlp | dropout | 4 (1 pruned) | p | dropout.p=0.3 | 0.9420 | +0.0120 | best trial |" in md  # fmt: skip
    assert (sweep / "strength_response.png").is_file()


def test_wandb_report_logs_every_plot(protocol_sweep):
    from reglab.training.loggers import report_plots

    main([str(protocol_sweep), "--quiet"])
    written = sorted(protocol_sweep.glob("*.png"))
    assert len(written) == 5 and set(written) <= set(report_plots(protocol_sweep))


def test_notebook_draws_the_protocol_plots(tmp_path, monkeypatch):
    sweep = write_protocol_sweep(tmp_path / "sweep")
    images, text = run_notebook(sweep, tmp_path, monkeypatch)
    assert len(images) == 3  # the per-setting panels, strength response, train vs validation
    assert "44 runs, 0 failed" in text and "Significant alone, not after the correction" in text
    assert "dropout+l2" in text


def test_a_skipped_cocktail_and_an_unfinished_protocol_are_said(tmp_path):
    sweep = write_protocol_sweep(tmp_path / "sweep", with_protocol_json=False)
    for stage in ("cocktail_tune", "cocktail_test"):
        for m in (sweep / stage).rglob("metrics.json"):
            m.unlink()
    protocol = protocol_json()
    del protocol["complete"]
    protocol["settings"][0]["cocktail"] = {"members": ["l2"], "skipped": "1 technique(s) helped "
                                           "on validation; a cocktail needs 2"}  # fmt: skip
    (sweep / "protocol.json").write_text(json.dumps(protocol))
    main([str(sweep), "--quiet"])
    md = (sweep / "report.md").read_text()
    assert "**The protocol has not finished**" in md
    best = section(md, "Best combination vs best single technique vs baseline")
    assert "No combination was tested: 1 technique(s) helped on validation; a cocktail needs 2." in best  # fmt: skip


def test_a_search_reports_its_trials_and_their_strength_response(tmp_path):
    # hparams_search=optuna: stage "search", no technique of the protocol's, no test.
    sweep = tmp_path / "sweep"
    for trial, (params, val, status) in enumerate(TRIALS["l2"]):
        write_trial(sweep, f"{trial}_l2", "search", "l2", trial, params, val, status)
        m = sweep / f"{trial}_l2" / "metrics.json"
        m.write_text(m.read_text().replace('"technique": "l2"', '"technique": null'))
    assert main([str(sweep), "--quiet"]) == 0
    md = (sweep / "report.md").read_text()
    assert "An Optuna search; runs per stage: search 4 (1 pruned)." in md
    assert "## Search (validation only" in md and "## How to read this" not in md
    assert "| digits/mlp | l2 | 4 (1 pruned) | strength | l2.strength=0.0001 | 0.9450 |" in md
    assert (sweep / "strength_response.png").is_file()
