import pandas as pd

from reglab.report import write_report
from reglab.report.cli import main

from .conftest import DELTA, FAILED_SEEDS, LOOKS, N_TRIALS, SEEDS, ZCA_KEY


def section(md: str, title: str) -> str:
    """The text of one ``## title`` section of report.md."""
    start = md.index(f"## {title}")
    end = md.find("\n## ", start + 1)
    return md[start : end if end > 0 else None]


def row(md: str, arm: str) -> list[str]:
    (line,) = [x for x in md.splitlines() if x.startswith(f"| {arm} |")]
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_report_md_reads_as_a_decision(comparison_sweep, capsys):
    assert main([str(comparison_sweep)]) == 1  # two tested runs failed
    md = (comparison_sweep / "report.md").read_text()
    protocol = next(x for x in md.splitlines() if x.startswith("**Protocol**"))
    assert f"{N_TRIALS} tuning trials per arm" in protocol
    assert f"looks of {', '.join(map(str, LOOKS))}" in protocol
    assert "alpha 0.05" in protocol and f"±{DELTA:g}" in protocol and "pocock" in protocol

    setting = section(md, "digits/mlp")
    header = row(setting, "technique")
    assert header[:6] == [
        "technique",
        "verdict",
        "Δ test/acc [CI]",
        "MDE",
        "seeds (look)",
        "trials",
    ]
    arms = [x.split(" | ")[0][2:] for x in setting.splitlines() if x.startswith("| ")][1:]
    assert arms == ["baseline", "l2", "cocktail", "zca", "dropout", "noise", "flip"]
    assert row(setting, "baseline")[5] == str(N_TRIALS)  # the baseline shows the same budget
    assert row(setting, "l2")[1] == "better" and row(setting, "l2")[2].startswith("+0.0500 [")
    assert row(setting, "zca")[1] == f"equivalent — at edge: {ZCA_KEY} at top"
    assert row(setting, "dropout")[1].startswith("undecided (could detect ±")
    assert row(setting, "dropout")[4] == f"{len(SEEDS)} (look 2/2)"
    failed = f"{len(FAILED_SEEDS['noise'])} of {len(SEEDS)} seeds failed (scored at chance)"
    assert failed in row(setting, "noise")[1]
    assert "![forest plot](forest.png)" in setting

    assert "**dropout: undecided** (could have detected ±" in setting
    assert "not significant" not in md and "| ns |" not in md
    assert "**Did not reproduce**" in setting and "dropout (val Δ loss -0.1" in setting
    assert "chosen on validation (**dropout**" in setting
    conditioned = section(md, "What the verdicts are conditioned on")
    assert "tuned once" in conditioned and "not the tuning's" in conditioned

    results = pd.read_csv(comparison_sweep / "results.csv")
    for col in (
        "verdict",
        "mean_diff",
        "ci_low",
        "ci_high",
        "mde",
        "seeds_needed",
        "n",
        "trials",
        "flags",
        "tuned",
        "at_edge",
    ):
        assert col in results, col
    assert set(results["trials"]) == {N_TRIALS}
    tuning = pd.read_csv(comparison_sweep / "tuning.csv")
    assert set(tuning["trials"]) == {N_TRIALS}
    assert "dropout" in capsys.readouterr().out


def test_the_report_is_byte_stable(comparison_sweep, fixed_sweep):
    for sweep in (comparison_sweep, fixed_sweep):
        write_report(sweep, quiet=True, plots=False)
        first = {n: (sweep / n).read_bytes() for n in ("report.md", "results.csv", "runs.csv")}
        write_report(sweep, quiet=True, plots=False)
        assert first == {n: (sweep / n).read_bytes() for n in first}
        assert not (sweep / "forest.png").exists()


def test_a_tuning_only_sweep_says_the_verdicts_are_still_to_come(comparison_sweep):
    for stage in ("test", "cocktail_test"):
        for m in comparison_sweep.glob(f"{stage}_*/*/metrics.json"):
            m.unlink()
    assert main([str(comparison_sweep), "--quiet"]) == 0
    md = (comparison_sweep / "report.md").read_text()
    assert "No test-stage run finished yet" in md
    assert (comparison_sweep / "strength_response.png").is_file()


def test_a_cocktail_that_is_one_technique_alone_says_so():
    """The search may choose one member alone at its tuned values: every paired difference is
    then exactly 0, and the sentence names it instead of printing an interval [-inf, +inf]."""
    from reglab.report.render import _cocktail_sentence

    s = pd.DataFrame({"technique": ["cocktail"], "verdict": ["equivalent"]})
    same = {"best_single": "max_norm", "n": 5, "mean_diff": 0.0, "p_value": 1.0}
    same.update(ci_low=float("-inf"), ci_high=float("inf"), val_mean=0.52, cocktail_val_mean=0.52)
    line = _cocktail_sentence(same, s)
    assert "max_norm** alone at its tuned values" in line and "inf" not in line
    worse = {**same, "mean_diff": -0.02, "ci_low": -0.03, "ci_high": -0.01, "p_value": 0.001}
    assert "the cocktail is worse" in _cocktail_sentence(worse, s)
