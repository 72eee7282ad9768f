"""A Horovod training process killed mid-epoch: the run fails clearly, and the rerun resumes from the last checkpoint."""

from __future__ import annotations

import pytest

from kfr_spark.distributed import TrainingProcessLost, horovod_available
from kfr_spark.train import KILL_MID_EPOCH_ENV
from test_train import planted_gold, train
from trials import TRIAL_IDS, TRIALS, kill_point, tally  # noqa: F401  (tally is a fixture)

pytestmark = [pytest.mark.spark, pytest.mark.resilience, pytest.mark.slow,
              pytest.mark.skipif(not horovod_available(), reason="horovod is not installed")]


@pytest.fixture
def gold(spark, tmp_path_factory, base_config):
    """A fresh planted lake per trial: the rerun must resume from this trial's checkpoints, not an earlier one's."""
    return planted_gold(spark, tmp_path_factory, base_config, item_taste=False, cold_user_fraction=0.0)


@pytest.mark.parametrize("trial", range(TRIALS), ids=TRIAL_IDS)
def test_a_training_process_killed_mid_epoch_resumes_from_its_last_checkpoint(spark, gold, monkeypatch,
                                                                              tally, trial):  # noqa: F811  (a fixture)
    lake, config = gold
    settings = dict(num_proc=2, epochs=4, batch_size=32, patience=4, hyper={"kfri": {"dim": 8}})
    # The kill point: either rank, in epoch 1, 2 or 3, at one of its first three steps (an epoch has more).
    place = kill_point("training", trial)
    rank, epoch, step = place.randrange(2), place.randint(1, 3), place.randrange(3)
    monkeypatch.setenv(KILL_MID_EPOCH_ENV, f"{rank}:{epoch}:{step}")
    with pytest.raises(TrainingProcessLost, match="2-process training failed: .*exited with non-zero status"):
        train(spark, lake, config, "kfri", **settings)
    monkeypatch.delenv(KILL_MID_EPOCH_ENV)
    resumed, _ = train(spark, lake, config, "kfri", **settings)
    assert resumed.processes == 2
    assert resumed.resumed_from_epoch == epoch  # every epoch before the kill was checkpointed
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    steps_per_epoch = resumed.history[0]["examples"] // (32 * 2)
    assert resumed.resumed_at_step >= epoch * steps_per_epoch  # with the checkpoint's optimizer state, not afresh
    tally.trial("training process killed mid-epoch", trial, resumed_at_epoch=f"{epoch} of 0-3",
                resumed_at_optimizer_step=resumed.resumed_at_step,
                kill_point=f"rank {rank}, epoch {epoch}, step {step}")
