"""Contract tests over every registered task: a task is tested the moment it registers."""

import json
import math

import pytest
import torch

from lifecycle.config import parse_params
from lifecycle.tasks import RawSample, Rejected, get_task, list_tasks
from lifecycle.tasks.base import InvalidSample
from lifecycle.trainer import AmpStep, build_optimizer


@pytest.fixture(scope="module", params=list_tasks())
def task(request):
    name = request.param
    params = parse_params({"tasks": [name], name: {"model": {}, "collect": {}}})
    return get_task(name)(params.task(name))


@pytest.fixture(scope="module")
def samples(task, tmp_path_factory):
    """A few real samples from the task's own default source, decoded from stored files (once per task: the
    hooks under test must not change them)."""
    tmp_path = tmp_path_factory.mktemp(task.name)
    items = []
    for candidate in task.collect(tmp_path / "no-landing-zone"):
        if isinstance(candidate, RawSample):
            path = tmp_path / f"{len(items)}{candidate.suffix}"
            path.write_bytes(candidate.data)
            items.append((task.load_input(path), candidate.label, candidate))
        if len(items) == 8:
            break
    assert len(items) == 8, "the default source yields samples without any user data"
    return items


def batch_of(task, samples, train: bool):
    transform = task.transform(train)
    return task.collate([transform(x, task.encode_target(label)) for x, label, _ in samples])


def same_outputs(a, b) -> bool:
    """Model outputs (a tensor or a structure of tensors) equal within float tolerance."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_outputs(a[k], b[k]) for k in a)
    return torch.allclose(a.float(), b.float(), atol=1e-5)


def test_registered_with_hooks(task):
    assert task.name in list_tasks() and get_task(task.name) is type(task)


def test_inspect_accepts_own_samples_and_rejects_garbage(task, samples):
    for _, label, candidate in samples:
        meta = task.inspect(candidate.data, label)
        json.dumps(meta)
    with pytest.raises(InvalidSample):
        task.inspect(b"not a sample at all", samples[0][1])


def test_tiny_batch_gives_finite_loss_and_one_step_learns(task, samples):
    torch.manual_seed(0)
    model = task.build_model()
    inputs, targets = batch_of(task, samples, train=True)
    amp = AmpStep(torch.device("cpu"), "bf16")
    optimizer = build_optimizer(model, task.cfg.train)
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    with amp.autocast():
        loss = task.loss(task.forward(model, inputs), targets)
    assert loss.ndim == 0 and math.isfinite(float(loss.detach()))
    amp.step(loss, optimizer, model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_predictions_match_the_output_schema(task, samples):
    model = task.build_model().eval()
    inputs, targets = batch_of(task, samples, train=False)
    with torch.no_grad():
        outputs = task.forward(model, inputs)
    predictions = task.predict(outputs)
    assert len(predictions) == len(samples)
    for p in predictions:
        json.dumps(p)
        assert 0.0 <= task.confidence(p) <= 1.0
        assert task.answer(p, {}) is not None
    metrics = task.metrics()
    metrics.update(outputs, targets)
    assert 0.0 <= float(metrics.compute()[task.primary_metric]) <= 1.0


def test_descriptors_have_stable_finite_columns(task, samples):
    keys = None
    for raw_input, _, _ in samples:
        d = task.descriptors(raw_input)
        assert all(isinstance(v, float) and math.isfinite(v) for v in d.values())
        keys = keys or list(d)
        assert list(d) == keys


def test_collect_reports_unusable_files_as_rejected(task, tmp_path):
    landing = tmp_path / "incoming"
    (landing / "no-such-label").mkdir(parents=True)
    (landing / "no-such-label" / "x.png").write_bytes(b"garbage")
    rejected = next((c for c in task.collect(landing) if isinstance(c, Rejected)), None)
    assert rejected is not None and rejected.reason and rejected.origin.endswith("x.png")


def test_serving_hooks(task, samples):
    """Every task is served by the generic service: a route, a multipart field, decode errors as 4xx, one
    forward pass giving both the outputs and the embedding."""
    from lifecycle.tasks.base import InvalidInput

    endpoints = [get_task(name).endpoint for name in list_tasks()]
    assert task.endpoint.isidentifier() and endpoints.count(task.endpoint) == 1
    assert task.input_field in ("image", "audio")
    for garbage in (b"", b"definitely not a sample"):
        with pytest.raises(InvalidInput) as err:
            task.decode(garbage)
        assert 400 <= err.value.status < 500 and str(err.value)
    decoded = task.decode(samples[0][2].data)
    assert torch.equal(decoded, samples[0][0]), "decode(bytes) is what load_input gives training"

    model = task.build_model().eval()
    inputs = task.batch_inputs([task.prepare(x) for x, _, _ in samples])
    with torch.no_grad():
        outputs, features = task.embed(model, inputs)
        expected = task.forward(model, inputs)
    assert same_outputs(outputs, expected) and features.shape[0] == len(samples)
    for prediction in task.predict(outputs):
        assert 0.0 <= task.confidence(prediction) <= 1.0


def test_monitoring_and_labeling_hooks(task, samples):
    """Shifted traffic decodes; predictions become monitored columns; Label Studio, where the task has an
    interface, round-trips a label."""
    import numpy as np

    data = samples[0][2].data
    rng = np.random.default_rng(0)
    assert "none" in task.shifts
    for kind in task.shifts:
        assert task.decode(task.shift(data, kind, rng)).dtype == samples[0][0].dtype
    model = task.build_model().eval()
    with torch.no_grad():
        prediction = task.predict(task.forward(model, task.batch_inputs([task.prepare(samples[0][0])])))[0]
    assert all(isinstance(v, (str, float)) for v in task.monitored(prediction).values())
    try:
        result = task.to_label_studio(prediction)
    except NotImplementedError:
        pytest.skip(f"task {task.name} has no Label Studio interface")
    label = task.from_label_studio(result)
    task.inspect(data, label)
    assert task.label_studio_config().startswith("<View>")
    with pytest.raises(ValueError):
        task.from_label_studio([{"type": "nonsense"}])
