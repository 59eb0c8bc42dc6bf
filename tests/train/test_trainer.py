import pytest
import torch

from losses import LeveledKDConfig, LeveledKDLoss
from models import build_model
from study.train import runtime
from study.train.data import shift_grid, train_val_split
from study.train.trainer import (AtSteps, EveryEpoch, TrainConfig, Trainer, autocast_context, inference_model,
                           resolve_precision, seed_everything, select_device)


def make_trainer(mnist, epochs=1, seed=0, callbacks=(), subset=600, max_steps=None, precision="fp32", arch="mlp_2",
                 lr_schedule="constant"):
    split = train_val_split(mnist, train_subset=subset, seed=0)
    seed_everything(seed)
    model = build_model(arch, mnist.input_shape, 10)
    loss = LeveledKDLoss(LeveledKDConfig(alpha=1.0))
    tensors = {"x": mnist.train_x[split.train], "y": mnist.train_y[split.train]}
    return Trainer(model, loss, tensors, TrainConfig(epochs=epochs, seed=seed, max_steps=max_steps,
                                                     batch_size=64, precision=precision, lr_schedule=lr_schedule),
                   callbacks)


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


def test_bf16_run_resumes_exactly_in_the_precision_it_started_with(mnist):
    full = make_trainer(mnist, epochs=2, precision="bf16").fit()
    first = make_trainer(mnist, epochs=2, max_steps=13, precision="bf16").fit()
    state = first.state_dict()
    assert state["precision"] == "bf16"
    resumed = make_trainer(mnist, epochs=2, precision="fp32")  # the checkpoint's precision wins
    resumed.load_state_dict(state)
    assert resumed.precision == "bf16"
    resumed.fit()
    assert torch.equal(weights(resumed), weights(full))
    fp32 = make_trainer(mnist, epochs=2, precision="fp32").fit()
    assert not torch.equal(weights(fp32), weights(full))  # bf16 really was used


def test_cnn_trains_channels_last_and_its_weights_load_anywhere(mnist):
    trainer = make_trainer(mnist, max_steps=1, arch="cnn_1").fit()
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    fresh = build_model("cnn_1", mnist.input_shape, 10)  # NCHW: loading only copies values
    fresh.load_state_dict(trainer.model.state_dict())
    trainer.model.eval(), fresh.eval()
    with torch.inference_mode():
        torch.testing.assert_close(fresh(mnist.train_x[:8]).logits, trainer.model(mnist.train_x[:8]).logits,
                                   rtol=1e-4, atol=1e-4)


def test_precision_is_resolved_per_device_and_validated(monkeypatch):
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512f", "avx2"}))
    assert resolve_precision("auto", "cpu") == "fp32"  # emulated bf16 is slower than fp32
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="half")
    monkeypatch.setenv(runtime.PRECISION_ENV, "fp32")  # what --precision sets for every process
    assert TrainConfig().precision == "fp32"


def test_inference_model_runs_bf16_even_where_the_caller_disables_autocast(mnist):
    model = build_model("mlp_2", mnist.input_shape, 10).eval()
    with torch.inference_mode(), torch.autocast("cpu", enabled=False):
        assert inference_model(model, "cpu", "bf16")(mnist.train_x[:4]).logits.dtype == torch.bfloat16
        assert inference_model(model, "cpu", "fp32")(mnist.train_x[:4]).logits.dtype == torch.float32
    with autocast_context("cpu", "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast_context("cpu", "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_speed_settings_are_on(mnist):
    trainer = make_trainer(mnist)
    assert trainer.optimizer.defaults.get("fused") is True  # one kernel over all parameters
    assert runtime.tune_allocator() is True  # glibc on Linux: large blocks stay in the process
    before = torch.get_num_threads()
    try:
        assert runtime.set_cpu_threads(1.5) == 1
        assert runtime.set_cpu_threads(None) == 1
    finally:
        torch.set_num_threads(before)


class RecordingTransform:
    """A batch transform that records what it was given and draws from the generator (adds noise)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, float]] = []

    def to(self, device):
        return self

    def __call__(self, batch, epoch, generator):
        draw = float(torch.rand((), generator=generator))
        self.calls.append((epoch, len(batch["x"]), draw))
        return {**batch, "x": batch["x"] + draw}


def test_the_batch_transform_gets_every_batch_its_epoch_and_a_generator_seeded_by_seed_and_step(mnist):
    transform = RecordingTransform()
    trainer = make_trainer(mnist, epochs=2)
    trainer.batch_transform = transform
    trainer.fit()
    assert [e for e, _, _ in transform.calls] == [0] * 10 + [1] * 10
    assert sum(n for _, n, _ in transform.calls[:10]) == trainer.num_samples
    expected = [float(torch.rand((), generator=torch.Generator().manual_seed(step))) for step in range(20)]
    assert [d for _, _, d in transform.calls] == expected  # seed 0: the generator of step s is seeded by s
    plain = make_trainer(mnist, epochs=2).fit()
    assert not torch.equal(weights(trainer), weights(plain))  # what the transform returns is what trains


def test_a_run_with_views_resumes_exactly(mnist):
    from study.train.views import ViewBatches, ViewSet

    def views_trainer(max_steps=None):
        trainer = make_trainer(mnist, epochs=2, max_steps=max_steps)
        views = ViewSet.create("mixup", k=3)
        x, y = trainer.tensors["x"], trainer.tensors["y"]
        batches = ViewBatches(views, views.draw(len(x), tuple(x.shape[1:])), x, y, mnist.fill, 10)
        trainer.tensors.update(batches.per_sample())
        trainer.batch_transform = batches
        return trainer

    full = views_trainer().fit()
    state = views_trainer(max_steps=13).fit().state_dict()  # stop mid-epoch
    resumed = views_trainer()
    resumed.load_state_dict(state)
    resumed.fit()
    torch.testing.assert_close(weights(resumed), weights(full))
    assert not torch.equal(weights(full), weights(make_trainer(mnist, epochs=2).fit()))


def test_cosine_schedule_anneals_over_the_run_and_resumes_exactly(mnist):
    lrs = []
    trainer = make_trainer(mnist, epochs=2, lr_schedule="cosine",
                           callbacks=[AtSteps(lambda s: True, lambda t: lrs.append(t.optimizer.param_groups[0]["lr"]))])
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-3 and trainer.total_steps == 20
    trainer.fit()
    assert lrs[9] == pytest.approx(0.5e-3) and lrs[-1] == pytest.approx(0.0, abs=1e-12)  # after steps 10 and 20
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    stop = AtSteps(lambda s: s == 13, lambda t: setattr(t, "should_stop", True))  # interrupted, not a shorter run
    state = make_trainer(mnist, epochs=2, lr_schedule="cosine", callbacks=[stop]).fit().state_dict()
    assert state["scheduler"]["last_epoch"] == 13
    resumed = make_trainer(mnist, epochs=2, lr_schedule="cosine")
    resumed.load_state_dict(state)
    resumed.fit()
    torch.testing.assert_close(weights(resumed), weights(trainer))
    constant = make_trainer(mnist, epochs=2).fit()
    assert constant.scheduler is None and constant.optimizer.param_groups[0]["lr"] == 1e-3
    assert not torch.equal(weights(constant), weights(trainer))
    with pytest.raises(ValueError, match="no learning-rate schedule state"):
        make_trainer(mnist, epochs=2, lr_schedule="cosine").load_state_dict(constant.state_dict())
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="graphs"):
        TrainConfig(lr_schedule="cosine", step_mode="graphs")
