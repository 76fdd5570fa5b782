import json
import pickle

import pytest
import torch

from reglab.core.errors import ConfigError
from reglab.eval import evaluate, load_checkpoint

from .conftest import cli, train


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    paths = []
    for seed in (1, 2):
        out = tmp_path_factory.mktemp(f"seed{seed}")
        train(["trainer.max_epochs=3", "callbacks=default", f"seed={seed}"], out)
        paths.append(str(out / "checkpoints" / "last.ckpt"))
    return paths


def test_eval_matches_training_test_accuracy(two_checkpoints, tmp_path):
    ckpt = two_checkpoints[0]
    s = evaluate([ckpt])
    member = s["members"][ckpt]
    assert 0.8 < member["test/acc"] <= 1.0 and member["test/ece"] >= 0


def test_ensemble_reports_members_and_mean_softmax(two_checkpoints):
    s = evaluate(two_checkpoints)
    assert set(s["members"]) == set(two_checkpoints) and "ensemble" in s
    assert s["best_member"] == max(m["test/acc"] for m in s["members"].values())
    assert s["ensemble"]["test/acc"] >= min(m["test/acc"] for m in s["members"].values()) - 0.02


def test_checkpoints_load_weights_only(two_checkpoints):
    ckpt = torch.load(two_checkpoints[0], weights_only=True)
    assert ckpt["hyper_parameters"]["data"]["name"] == "digits"


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this would have run",))

    bad = tmp_path / "bad.ckpt"
    with open(bad, "wb") as f:
        torch.save(
            {"state_dict": {}, "evil": Payload()}, f, pickle_protocol=pickle.HIGHEST_PROTOCOL
        )
    with pytest.raises(ConfigError, match="trust_checkpoint=true"):
        load_checkpoint(bad)


def test_cli_eval_writes_metrics(two_checkpoints, tmp_path):
    r = cli("reglab-eval", f"ckpt_path=[{','.join(two_checkpoints)}]", f"paths.log_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    (out,) = tmp_path.glob("eval/*/eval_metrics.json")
    saved = json.loads(out.read_text())
    assert "ensemble" in saved and "ensemble" in r.stdout


@pytest.mark.parametrize("tta", [True, False])
def test_eval_scores_a_checkpoint_like_training_did(tmp_path, tta):
    """One prediction path: reglab-eval on the tested checkpoint gives the test scores that
    trainer.test wrote into metrics.json, test-time augmentation included."""
    s = train(
        [
            "trainer.max_epochs=2",
            "callbacks=default",
            f"execution.tta={str(tta).lower()}",
            "model.widths=[32]",
        ],
        tmp_path,
    )
    member = evaluate([s["best_checkpoint"]])["members"][s["best_checkpoint"]]
    for key in ("test/acc", "test/loss", "test/ece"):
        assert member[key] == pytest.approx(s[key], abs=1e-6), key


def test_tta_changes_what_is_scored(tmp_path):
    """The test above could pass with TTA ignored on both sides: the flag must change the scores."""
    s = train(["trainer.max_epochs=2", "callbacks=default", "model.widths=[32]"], tmp_path)
    ckpt = torch.load(s["best_checkpoint"], weights_only=True)
    ckpt["hyper_parameters"]["execution"] = {"tta": True}
    flipped = tmp_path / "tta.ckpt"
    torch.save(ckpt, flipped)
    plain = evaluate([s["best_checkpoint"]])["members"][s["best_checkpoint"]]
    with_tta = evaluate([str(flipped)])["members"][str(flipped)]
    assert with_tta["test/loss"] != pytest.approx(plain["test/loss"], abs=1e-6)
