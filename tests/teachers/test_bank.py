import json

import numpy as np
import pytest
import torch

from study.teachers import bank as teachers_module
from study.teachers.bank import SnapshotError, TeacherBank, TeacherSpec, is_snapshot_step, sha256, snapshot_steps
from study.train.trainer import inference_model


def test_snapshot_schedule_exactly():
    assert snapshot_steps(500) == list(range(50, 501, 50))
    assert snapshot_steps(2600) == [50, 100, 150, 200, 250, 300, 350, 400, 450, 500, 1000, 1500, 2000, 2500]
    assert snapshot_steps(120) == [50, 100]
    assert snapshot_steps(10) == []
    assert [s for s in range(1, 3001) if is_snapshot_step(s)] == snapshot_steps(3000)


@pytest.fixture
def bank(tmp_path, mnist):
    bank = TeacherBank(tmp_path / "teachers", TeacherSpec("mnist", "tiny_cnn"), eval_images=100)
    bank.ensure(mnist, max_steps=100, device="cpu")
    return bank


def test_bank_has_manifest_with_accuracy_and_hashes(bank):
    manifest = json.loads(bank.manifest_path.read_text())
    assert sorted(map(int, manifest["snapshots"])) == [50, 100]
    for step, record in manifest["snapshots"].items():
        assert record["sha256"] == sha256(bank.snapshot_path(int(step)))
        assert 0.0 <= record["clean_acc"] <= 1.0 and 0.0 <= record["translated_acc"] <= 1.0
    assert manifest["teacher"]["arch"] == "tiny_cnn"


def test_second_call_trains_nothing(bank, mnist, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the bank was retrained")

    monkeypatch.setattr(teachers_module.Trainer, "fit", no_training)
    assert bank.ensure(mnist, max_steps=100) == [50, 100]
    assert TeacherBank(bank.dir.parents[2], bank.spec).ensure(mnist, max_steps=80) == [50]


def test_extending_a_bank_continues_instead_of_retraining(bank, mnist, tmp_path):
    before = sha256(bank.snapshot_path(50))
    bank.ensure(mnist, max_steps=150, device="cpu")
    assert bank.steps() == [50, 100, 150]
    assert sha256(bank.snapshot_path(50)) == before
    fresh = TeacherBank(tmp_path / "fresh", bank.spec, eval_images=100)
    fresh.ensure(mnist, max_steps=150, device="cpu")
    a, b = bank.load(150, mnist), fresh.load(150, mnist)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb)


def test_a_bank_in_another_precision_says_so(bank, mnist):
    """An existing bank keeps its precision; asking for another one is reported, not silent."""
    trained_in = bank.manifest()["precision"]
    other = "bf16" if trained_in == "fp32" else "fp32"
    said: list[str] = []
    assert bank.ensure(mnist, max_steps=100, precision=other, progress=said.append) == [50, 100]
    assert len(said) == 1 and f"trained in {trained_in}" in said[0] and f"{other} was asked for" in said[0]
    for asked in (trained_in, "auto"):
        assert bank.precision_note(asked) is None
    assert bank.manifest()["precision"] == trained_in


def test_corrupted_snapshot_is_refused(bank, mnist):
    path = bank.snapshot_path(50)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="sha256"):
        bank.load(50, mnist)
    with pytest.raises(SnapshotError, match="available: \\[50, 100\\]"):
        bank.load(75, mnist)


def test_output_cache_is_computed_once_and_matches_the_teacher(bank, mnist, monkeypatch):
    logits, features = bank.outputs(100, mnist, device="cpu")  # every training image
    assert logits.shape == (len(mnist.train_x), 10) and features.shape == (len(mnist.train_x), 8)
    teacher = bank.load(100, mnist)
    with torch.inference_mode():  # the cache runs the teacher in the bank's precision (bf16 on bf16 CPUs)
        expected = inference_model(teacher, "cpu", bank.manifest()["precision"])(mnist.train_x[:64])
    torch.testing.assert_close(logits[:64], expected.logits.float(), rtol=1e-4, atol=1e-4)
    assert bank.outputs_path(100).is_file()
    subset = torch.arange(10, 50)
    sub_logits, _ = bank.outputs(100, mnist, subset, device="cpu")
    torch.testing.assert_close(sub_logits, logits[10:50])
    assert bank.outputs_path(100, subset) != bank.outputs_path(100) and bank.outputs_path(100, subset).is_file()
    assert not bank.outputs_path(50).exists()  # a snapshot no student used costs nothing

    monkeypatch.setattr(TeacherBank, "load", lambda *a, **k: pytest.fail("teacher was run again"))
    again, _ = bank.outputs(100, mnist, device="cpu")
    assert torch.equal(again, logits)


def test_label_smoothed_teacher_is_a_separate_bank(tmp_path):
    plain = TeacherBank(tmp_path, TeacherSpec("mnist", "cnn_1"))
    smooth = TeacherBank(tmp_path, TeacherSpec("mnist", "cnn_1", label_smoothing=0.1))
    assert plain.dir != smooth.dir and "ls0.1" in str(smooth.dir)


def test_a_bank_key_reads_back_as_its_spec():
    """Studies record banks by key; reading one back must give the spec that wrote it."""
    for spec in (TeacherSpec("mnist", "cnn_1"), TeacherSpec("fashion_mnist", "cnn_2", 2, 0.1),
                 TeacherSpec("cifar10", "inn_1", 1)):
        assert TeacherSpec.from_key(spec.key) == spec
    for bad in ("mnist/cnn_1", "mnist/cnn_1/2", "mnist/cnn_1-lsx/seed-0", "/cnn_1/seed-0"):
        with pytest.raises(ValueError, match="not a teacher-bank key"):
            TeacherSpec.from_key(bad)


# ----------------------------------------------------------------------------- scoring images

@pytest.fixture
def sorted_mnist(mnist):
    """The test slice stored class by class, as an image folder is read: its prefix is one class."""
    from dataclasses import replace

    order = torch.argsort(mnist.test_y, stable=True)
    return replace(mnist, test_x=mnist.test_x[order], test_y=mnist.test_y[order])


def stratified_scores(bank, data, step, images):
    """What a snapshot scores on a seeded, stratified sample of ``images`` test images, computed here."""
    from study.train.data import evaluation_indices, shift_grid
    from study.train.evaluation import translation_accuracy

    rows = evaluation_indices(data.test_y, images)
    model = inference_model(bank.load(step, data), "cpu", bank.manifest()["precision"])
    result = translation_accuracy(model, data.test_x[rows], data.test_y[rows], shift_grid(), data.fill, device="cpu")
    return result.clean_acc, result.translated_acc


def test_snapshot_scores_are_those_of_a_stratified_sample(tmp_path, sorted_mnist):
    bank = TeacherBank(tmp_path, TeacherSpec("mnist", "tiny_cnn"), eval_images=60)
    bank.ensure(sorted_mnist, max_steps=100, device="cpu")
    manifest = bank.manifest()
    assert manifest["scoring"] == {"subset": "stratified", "seed": 0}
    rows = bank.scoring_indices(sorted_mnist)
    assert len(rows) == 60 and len(torch.unique(sorted_mnist.test_y[rows])) == 10  # a prefix: one class
    for step in (50, 100):
        record = manifest["snapshots"][str(step)]
        clean, translated = stratified_scores(bank, sorted_mnist, step, 60)
        assert record["eval_images"] == 60
        assert record["clean_acc"] == pytest.approx(clean, abs=1e-9)
        assert record["translated_acc"] == pytest.approx(translated, abs=1e-9)


def test_a_bank_scored_on_a_prefix_is_rescored_keeping_its_snapshots(tmp_path, sorted_mnist, monkeypatch):
    """A format-2 manifest (scored on the test set's first images) gets stratified scores on its
    next use, with the same number of images; its snapshots are neither retrained nor replaced,
    and the prefix's numbers stay in the record."""
    bank = TeacherBank(tmp_path, TeacherSpec("mnist", "tiny_cnn"), eval_images=60)
    bank.ensure(sorted_mnist, max_steps=100, device="cpu")
    legacy = json.loads(bank.manifest_path.read_text())
    legacy["format"] = 2
    del legacy["scoring"]
    for record in legacy["snapshots"].values():
        record.update(clean_acc=0.99, translated_acc=0.98, eval_images=40)  # what a one-class prefix said
    bank.manifest_path.write_text(json.dumps(legacy))
    hashes = {step: sha256(bank.snapshot_path(step)) for step in (50, 100)}
    assert not bank.scored_as_now()

    from study.analysis import arms
    trials = __import__("pandas").DataFrame([{"teachers": "tiny_cnn", "teacher_step": 100, "teacher_seed": 0}])
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study.json").write_text(json.dumps({"plan": {"teacher_banks": str(tmp_path),
                                                                        "dataset": "mnist"}}))
    assert arms.teacher_accuracies(trials, tmp_path / "study") == {}  # a prefix's score is never reported

    monkeypatch.setattr(teachers_module.Trainer, "fit", lambda *a, **k: pytest.fail("the bank was retrained"))
    said: list[str] = []
    assert bank.ensure(sorted_mnist, max_steps=100, device="cpu", progress=said.append) == [50, 100]
    assert any("rescoring 2 snapshots" in line for line in said)
    manifest = json.loads(bank.manifest_path.read_text())
    assert manifest["format"] == teachers_module.MANIFEST_FORMAT and manifest["scoring"]["subset"] == "stratified"
    for step in (50, 100):
        record = manifest["snapshots"][str(step)]
        assert record["sha256"] == hashes[step] == sha256(bank.snapshot_path(step))
        assert record["prefix_scores"] == {"clean_acc": 0.99, "translated_acc": 0.98}
        clean, translated = stratified_scores(bank, sorted_mnist, step, 40)
        assert record["eval_images"] == 40 and record["clean_acc"] == pytest.approx(clean, abs=1e-9)
        assert record["translated_acc"] == pytest.approx(translated, abs=1e-9)
    assert arms.teacher_accuracies(trials, tmp_path / "study")["teacher_clean_acc"] == manifest["snapshots"]["100"]["clean_acc"]
    said.clear()
    bank.ensure(sorted_mnist, max_steps=100, device="cpu", progress=said.append)
    assert not said  # rescored once


# ----------------------------------------------------------------------------- format and locking

def test_bank_without_a_format_is_upgraded_not_misread(bank, mnist, monkeypatch):
    """A bank written before formats existed keeps its snapshots (extended, not retrained) and
    recomputes its caches, which predate the cache format, instead of trusting them."""
    logits, _ = bank.outputs(100, mnist, device="cpu")
    legacy = json.loads(bank.manifest_path.read_text())
    assert legacy.pop("format") == teachers_module.MANIFEST_FORMAT
    del legacy["scoring"]  # a format-1 bank recorded no scoring either
    bank.manifest_path.write_text(json.dumps(legacy))
    cache = torch.load(bank.outputs_path(100), weights_only=True)
    del cache["format"]
    torch.save(cache, bank.outputs_path(100))  # a legacy cache: no format (and a hash the manifest forgets)

    assert bank.steps() == [50, 100] and "outputs" not in bank.record(100)
    monkeypatch.setattr(teachers_module.Trainer, "fit", lambda *a, **k: pytest.fail("the bank was retrained"))
    assert bank.ensure(mnist, max_steps=100) == [50, 100]
    again, _ = bank.outputs(100, mnist, device="cpu")  # recomputed from the kept snapshot
    torch.testing.assert_close(again, logits)
    written = json.loads(bank.manifest_path.read_text())
    assert written["format"] == teachers_module.MANIFEST_FORMAT and "all" in written["snapshots"]["100"]["outputs"]
    assert torch.load(bank.outputs_path(100), weights_only=True)["format"] == teachers_module.CACHE_FORMAT


@pytest.mark.parametrize("content, message", [
    ({"format": 99, "snapshots": {}}, "newer leveled-kd \\(bank format 99"),
    ({"format": "two", "snapshots": {}}, "unknown manifest format"),
    ({"steps": [50]}, "not a teacher-bank manifest"),
])
def test_manifest_of_another_format_is_refused(tmp_path, content, message):
    bank = TeacherBank(tmp_path, TeacherSpec("mnist", "tiny_cnn"))
    bank.dir.mkdir(parents=True)
    bank.manifest_path.write_text(json.dumps(content))
    with pytest.raises(SnapshotError, match=message):
        bank.steps()


CONCURRENT_BANK_USER = """
import sys, torch
import study.testing  # registers tiny_cnn
from study.train.data import load_dataset
from study.teachers.bank import TeacherBank, TeacherSpec

root, worker = sys.argv[1], int(sys.argv[2])
data = load_dataset("mnist", sys.argv[3], download=False)
bank = TeacherBank(root, TeacherSpec("mnist", "tiny_cnn"), eval_images=50)
bank.ensure(data, max_steps=150, device="cpu", progress=lambda m: print(m, flush=True))
for i in range(12):  # many small caches: many manifest read-modify-writes racing the other process's
    bank.outputs(150, data, torch.arange(worker * 100 + i, worker * 100 + i + 20), device="cpu")
"""


def test_two_processes_extending_and_caching_one_bank_lose_nothing(bank, mnist_root, tmp_path):
    """Both extend the bank to step 150 (one trains, the other waits and reuses it) and each caches
    12 subsets: every snapshot and all 24 caches end up in the manifest, each file matching its hash."""
    import subprocess
    import sys

    script = tmp_path / "use_bank.py"
    script.write_text(CONCURRENT_BANK_USER)
    root = bank.dir.parents[2]
    procs = [subprocess.Popen([sys.executable, str(script), str(root), str(w), str(mnist_root)],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    trained = [out.count("tiny_cnn/seed-0 step 150") for out, _ in outs]
    assert sorted(trained) == [0, 1], outs  # trained once; the other process waited and reused it
    manifest = json.loads(bank.manifest_path.read_text())
    assert sorted(map(int, manifest["snapshots"])) == [50, 100, 150]
    caches = manifest["snapshots"]["150"]["outputs"]
    assert len(caches) == 24
    for tag, digest in caches.items():
        assert sha256(bank.dir / f"step-000150.outputs-{tag}.pt") == digest
    assert sha256(bank.snapshot_path(150)) == manifest["snapshots"]["150"]["sha256"]
    assert not list(bank.dir.glob("*.tmp"))


def test_bank_records_its_precision_and_an_extension_keeps_it(tmp_path, mnist):
    spec = TeacherSpec("mnist", "tiny_cnn")
    bank = TeacherBank(tmp_path / "a", spec, eval_images=50)
    bank.ensure(mnist, max_steps=50, device="cpu", precision="bf16")
    assert bank.manifest()["precision"] == "bf16"
    bank.ensure(mnist, max_steps=100, device="cpu", precision="fp32")  # continues in bf16, exactly
    assert bank.manifest()["precision"] == "bf16"
    straight = TeacherBank(tmp_path / "b", spec, eval_images=50)
    straight.ensure(mnist, max_steps=100, device="cpu", precision="bf16")
    for pa, pb in zip(bank.load(100, mnist).state_dict().values(), straight.load(100, mnist).state_dict().values()):
        assert torch.equal(pa, pb)
    _, features = bank.outputs(100, mnist, torch.arange(20), device="cpu", precision="fp32")
    cached = torch.load(bank.outputs_path(100, torch.arange(20)), weights_only=True)
    assert cached["precision"] == "fp32" and features.dtype == torch.float32


def test_a_snapshot_is_evaluated_once_on_a_studys_test_images(bank, mnist, monkeypatch):
    """The teacher's side of a transfer ratio: the students' evaluator on the students' images,
    cached beside the snapshot and named by its hash."""
    from study.train.data import evaluation_indices, shift_grid
    from study.train.evaluation import translation_accuracy

    rows = evaluation_indices(mnist.test_y, 120)
    result = bank.evaluation(100, mnist, rows, device="cpu")
    model = inference_model(bank.load(100, mnist), "cpu", bank.manifest()["precision"])
    expected = translation_accuracy(model, mnist.test_x[rows], mnist.test_y[rows], shift_grid(), mnist.fill,
                                    keep_per_image=True)
    assert np.array_equal(result.indices, rows.numpy()) and result.shifts == tuple(expected.per_shift)
    assert np.array_equal(result.correct, expected.correct.numpy())
    assert result.accuracy("translated") == pytest.approx(expected.translated_acc)
    assert bank.evaluation_path(100, rows).is_file() and bank.record(100)["sha256"][:12] in bank.evaluation_path(100, rows).name
    monkeypatch.setattr(TeacherBank, "load", lambda *a, **k: pytest.fail("the teacher was evaluated again"))
    assert np.array_equal(bank.evaluation(100, mnist, rows).correct, result.correct)
    assert bank.evaluation_path(100, rows[:60]) != bank.evaluation_path(100, rows)  # other images: another file


def test_stage_one_builds_a_bank_and_computes_no_cache(tmp_path, mnist):
    """Stage 1 trains (or extends) banks only: caches are the trials' to compute, on first use."""
    from study.teachers.stage import _build_bank

    spec = TeacherSpec("mnist", "tiny_cnn")
    manifest = _build_bank(spec, mnist, str(tmp_path), max_steps=100, eval_images=50, device="cpu")
    assert sorted(map(int, manifest["snapshots"])) == [50, 100] and manifest["finished"] >= manifest["started"]
    bank = TeacherBank(tmp_path, spec)
    assert not list(bank.dir.glob("*.outputs*.pt"))
    assert all("outputs" not in record for record in bank.manifest()["snapshots"].values())


def test_stage_one_trains_a_new_bank_in_the_teacher_precision_not_the_students(tmp_path, mnist, monkeypatch):
    """``--teacher-precision bf16 --precision fp32``: the stage's tasks see the students' precision in
    the environment, and the bank must still be started in the teachers' own."""
    from study.teachers.stage import _build_bank

    monkeypatch.setenv("LEVELED_KD_PRECISION", "fp32")
    for precision in ("bf16", "fp32"):
        spec = TeacherSpec("mnist", "tiny_cnn", seed={"bf16": 1, "fp32": 2}[precision])
        manifest = _build_bank(spec, mnist, str(tmp_path), max_steps=50, eval_images=20, device="cpu",
                               precision=precision)
        assert manifest["precision"] == precision


@pytest.mark.parametrize("name", ["mixup", "noise", "erase"])
def test_view_cache_holds_the_teachers_outputs_on_every_view_once(bank, mnist, monkeypatch, name):
    """K outputs per image, each the teacher's on that (image, view) as the trainer builds it; cached
    once per (snapshot, view set, indices), beside and apart from the plain cache."""
    from study.train.views import ViewSet

    views = ViewSet.create(name, k=3, seed=1)
    subset = torch.arange(40, 100)
    logits, features = bank.outputs(100, mnist, subset, device="cpu", views=views)
    assert logits.shape == (60, 3, 10) and features.shape == (60, 3, 8)
    images = mnist.train_x[subset]
    params = views.draw(len(images), tuple(images.shape[1:]))
    teacher = inference_model(bank.load(100, mnist), "cpu", bank.manifest()["precision"])
    with torch.inference_mode():
        for k in range(3):
            view = views.build(images, params.of(slice(None), k), params.shared, images, mnist.fill)
            torch.testing.assert_close(logits[:, k], teacher(view).logits.float(), rtol=1e-4, atol=1e-4)
    plain, _ = bank.outputs(100, mnist, subset, device="cpu")
    assert not torch.allclose(plain, logits[:, 0])  # the views are not the images
    paths = {bank.outputs_path(100, subset), bank.outputs_path(100, subset, views),
             bank.outputs_path(100, subset, ViewSet.create(name, k=3, seed=2))}
    assert len(paths) == 3 and bank.outputs_path(100, subset, views).is_file()
    assert views.tag in bank.outputs_path(100, subset, views).name
    cached = torch.load(bank.outputs_path(100, subset, views), weights_only=True)
    assert cached["views"] == views.describe()

    monkeypatch.setattr(TeacherBank, "load", lambda *a, **k: pytest.fail("teacher was run again"))
    again, _ = bank.outputs(100, mnist, subset, device="cpu", views=ViewSet.create(name, k=3, seed=1))
    assert torch.equal(again, logits)
