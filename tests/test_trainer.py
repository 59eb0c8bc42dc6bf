import torch

from losses import LeveledKDConfig, LeveledKDLoss
from models import build_model
from study.data import shift_grid, train_val_split
from study.trainer import AtSteps, EveryEpoch, TrainConfig, Trainer, seed_everything, select_device


def make_trainer(mnist, epochs=1, seed=0, callbacks=(), subset=600, max_steps=None):
    split = train_val_split(mnist, train_subset=subset, seed=0)
    seed_everything(seed)
    model = build_model("mlp_2", mnist.input_shape, 10)
    loss = LeveledKDLoss(LeveledKDConfig(alpha=1.0))
    tensors = {"x": mnist.train_x[split.train], "y": mnist.train_y[split.train]}
    return Trainer(model, loss, tensors, TrainConfig(epochs=epochs, seed=seed, max_steps=max_steps,
                                                     batch_size=64), callbacks)


def weights(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


def test_cpu_is_default_without_gpu():
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_seeded_runs_are_identical_and_seeds_differ(mnist):
    a, b, c = make_trainer(mnist).fit(), make_trainer(mnist).fit(), make_trainer(mnist, seed=1).fit()
    assert torch.equal(weights(a), weights(b))
    assert not torch.equal(weights(a), weights(c))


def test_resume_from_checkpoint_continues_exactly(mnist):
    full = make_trainer(mnist, epochs=2).fit()
    first = make_trainer(mnist, epochs=2, max_steps=13).fit()  # stop mid-epoch
    state = first.state_dict()
    resumed = make_trainer(mnist, epochs=2)
    resumed.load_state_dict(state)
    resumed.fit()
    assert resumed.step == full.step
    torch.testing.assert_close(weights(resumed), weights(full))


def test_callbacks_fire_on_steps_and_epochs(mnist):
    steps, epochs = [], []
    trainer = make_trainer(mnist, epochs=2, callbacks=[AtSteps(lambda s: s % 5 == 0, lambda t: steps.append(t.step)),
                                                       EveryEpoch(lambda t: epochs.append(t.epoch))])
    trainer.fit()
    assert trainer.steps_per_epoch == 10
    assert steps == [5, 10, 15, 20] and epochs == [1, 2]


def test_training_beats_chance_and_reports_translation(mnist):
    trainer = make_trainer(mnist, epochs=3, subset=1500).fit()
    split = train_val_split(mnist)
    result = trainer.evaluate(mnist.train_x[split.val], mnist.train_y[split.val], shift_grid([4]), mnist.fill)
    assert result.clean_acc > 0.5
    assert set(result.per_shift) == {(0, 0), *[s for s in shift_grid([4]) if s != (0, 0)]}
    assert 0.0 <= result.translated_acc <= 1.0
    assert trainer.model.training  # evaluation restores the training mode
    metrics = result.metrics("val_")
    assert "val_translated_acc" in metrics and "val_acc_shift/dx_4_dy_0" in metrics
