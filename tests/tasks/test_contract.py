"""Contract tests over every part of every registered task: a task is tested the moment it registers."""

import json
import math

import numpy as np
import pytest
import torch

from lifecycle.params import parse_params
from lifecycle.samples import InvalidInput, InvalidSample, RawSample, Rejected
from lifecycle.tasks import build_task, capabilities, get_task, list_tasks
from lifecycle.tasks.parts import PART_NAMES, Forward, Labeling, Landing, Part, StreamingOutputs
from lifecycle.trainer import AmpStep, build_optimizer


@pytest.fixture(scope="module", params=list_tasks())
def task(request):
    name = request.param
    params = parse_params({"tasks": [name], name: {"model": {}, "collect": {}}})
    return build_task(name, params.task(name))


@pytest.fixture(scope="module")
def samples(task, tmp_path_factory):
    """A few real samples from the task's own default source, decoded from stored files (once per task: the
    hooks under test must not change them)."""
    tmp_path = tmp_path_factory.mktemp(task.name)
    items = []
    for candidate in task.source.collect(tmp_path / "no-landing-zone"):
        if isinstance(candidate, RawSample):
            path = tmp_path / f"{len(items)}{candidate.suffix}"
            path.write_bytes(candidate.data)
            items.append((task.codec.load_input(path), candidate.label, candidate))
        if len(items) == 8:
            break
    assert len(items) == 8, "the default source yields samples without any user data"
    return items


def batch_of(task, samples, train: bool):
    transform = task.codec.transform(train)
    return task.codec.collate([transform(x, task.codec.encode_target(label)) for x, label, _ in samples])


def same_outputs(a, b) -> bool:
    """Model outputs (a tensor or a structure of tensors) equal within float tolerance."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_outputs(a[k], b[k]) for k in a)
    return torch.allclose(a.float(), b.float(), atol=1e-5)


def test_registered_with_its_parts_and_capabilities(task):
    spec = get_task(task.name)
    assert task.spec is spec and capabilities()[task.name] == sorted(spec.capabilities)
    for name in PART_NAMES:
        part = getattr(task.parts, name)
        assert part is None or isinstance(part, Part), name
    assert (task.labeling is not None) == ("labeling" in spec.capabilities)
    assert ("streaming" in spec.capabilities) == isinstance(task.outputs, StreamingOutputs)
    assert task.goal.metric and spec.endpoint.isidentifier()


def test_parts_read_only_the_sections_they_declare(task):
    schema_sections = {"collect", "validation", "split", "model", "train", "tune", "evaluate", "promote", "serve"}
    for name in PART_NAMES:
        part = getattr(task.parts, name)
        if part is not None:
            assert part.sections() <= schema_sections, name
    with pytest.raises(AttributeError, match="without declaring it"):
        getattr(task.source.cfg, "promote")  # noqa: B009 - no source reads the promotion gate


def test_inspect_accepts_own_samples_and_rejects_garbage(task, samples):
    for _, label, candidate in samples:
        meta = task.source.inspect(candidate.data, label)
        json.dumps(meta)
    with pytest.raises(InvalidSample):
        task.source.inspect(b"not a sample at all", samples[0][1])


def test_tiny_batch_gives_finite_loss_and_one_step_learns(task, samples):
    torch.manual_seed(0)
    model = task.network.build()
    inputs, targets = batch_of(task, samples, train=True)
    amp = AmpStep(torch.device("cpu"), "bf16")
    optimizer = build_optimizer(model, task.cfg.train)
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    with amp.autocast():
        loss = task.network.loss(task.network.forward(model, inputs).outputs, targets)
    assert loss.ndim == 0 and math.isfinite(float(loss.detach()))
    amp.step(loss, optimizer, model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_predictions_match_the_output_schema(task, samples):
    model = task.network.build().eval()
    inputs, targets = batch_of(task, samples, train=False)
    with torch.no_grad():
        outputs = task.network.forward(model, inputs).outputs
    predictions = task.outputs.predict(outputs)
    assert len(predictions) == len(samples)
    for p in predictions:
        json.dumps(p)
        assert 0.0 <= task.outputs.confidence(p) <= 1.0
        assert task.outputs.answer(p, {}) is not None
    metrics = task.network.metrics()
    metrics.update(outputs, targets)
    assert 0.0 <= float(metrics.compute()[task.goal.metric]) <= 1.0


def test_descriptors_have_stable_finite_columns_whatever_they_are_described_with(task, samples):
    """The service describes each batch at once; an input's numbers must be those it gets alone."""
    raw_inputs = [raw_input for raw_input, _, _ in samples]
    together = task.monitoring.descriptors(raw_inputs)
    assert together == [task.monitoring.descriptors([x])[0] for x in raw_inputs]
    assert together == task.monitoring.descriptors(raw_inputs[::-1])[::-1]
    for d in together:
        assert all(isinstance(v, float) and math.isfinite(v) for v in d.values())
        assert list(d) == list(together[0])


def test_collect_reports_unusable_files_as_rejected(task, tmp_path):
    landing = tmp_path / "incoming"
    (landing / "no-such-label").mkdir(parents=True)
    (landing / "no-such-label" / "x.png").write_bytes(b"garbage")
    rejected = next((c for c in task.source.collect(landing) if isinstance(c, Rejected)), None)
    assert rejected is not None and rejected.reason and rejected.origin.endswith("x.png")


def test_serving_parts(task, samples):
    """Every task is served by the generic service: a route, a multipart field, decode errors as 4xx, one
    forward pass giving both the outputs and the embedding."""
    endpoints = [get_task(name).endpoint for name in list_tasks()]
    assert endpoints.count(task.spec.endpoint) == 1
    assert task.codec.input_field in ("image", "audio")
    for garbage in (b"", b"definitely not a sample"):
        with pytest.raises(InvalidInput) as err:
            task.codec.decode(garbage)
        assert 400 <= err.value.status < 500 and str(err.value)
    decoded = task.codec.decode(samples[0][2].data)
    assert torch.equal(decoded, samples[0][0]), "decode(bytes) is what load_input gives training"

    model = task.network.build().eval()
    inputs = task.codec.batch_inputs([task.codec.prepare(x) for x, _, _ in samples])
    with torch.no_grad():
        forward = task.network.forward(model, inputs)
        again = task.network.forward(model, inputs)
    assert isinstance(forward, Forward) and forward.features.shape[0] == len(samples)
    assert same_outputs(forward.outputs, again.outputs)
    for prediction in task.outputs.predict(forward.outputs):
        assert 0.0 <= task.outputs.confidence(prediction) <= 1.0


def test_monitoring_part(task, samples):
    """Shifted traffic decodes; predictions become monitored columns."""
    data = samples[0][2].data
    rng = np.random.default_rng(0)
    assert "none" in task.monitoring.shifts
    for kind in task.monitoring.shifts:
        assert task.codec.decode(task.monitoring.shift(data, kind, rng)).dtype == samples[0][0].dtype
    with pytest.raises(ValueError, match="no-such-shift"):
        task.monitoring.shift(data, "no-such-shift", rng)
    model = task.network.build().eval()
    with torch.no_grad():
        outputs = task.network.forward(model, task.codec.batch_inputs([task.codec.prepare(samples[0][0])])).outputs
    prediction = task.outputs.predict(outputs)[0]
    assert all(isinstance(v, (str, float)) for v in task.monitoring.monitored(prediction).values())


def test_labeling_part_round_trips_a_label(task, samples, tmp_path):
    """Label Studio, where the task has a labeling part: a prediction becomes a pre-annotation whose label
    inspects as valid, lands where collect reads it (twice: nothing is written again), and nonsense is refused."""
    if task.labeling is None:
        assert "labeling" not in task.spec.capabilities
        return
    assert isinstance(task.labeling, Labeling)
    model = task.network.build().eval()
    with torch.no_grad():
        outputs = task.network.forward(model, task.codec.batch_inputs([task.codec.prepare(samples[0][0])])).outputs
    prediction = task.outputs.predict(outputs)[0]
    data = samples[0][2].data
    result = task.labeling.to_label_studio(prediction)
    for region in result:
        assert {"from_name", "to_name", "type", "value"} <= set(region), region
    label = task.labeling.from_label_studio(result, data)
    task.source.inspect(data, label)
    assert task.labeling.interface().startswith("<View>")
    with pytest.raises(ValueError):
        task.labeling.from_label_studio([{"type": "nonsense"}], data)
    incoming = tmp_path / "incoming"
    landing = [Landing("x" + samples[0][2].suffix, data, label)]
    assert task.labeling.land(incoming, landing), "the sample is written"
    assert task.labeling.land(incoming, landing) == [], "a sample already there is left as it is"
    landing_only = task.with_config(
        task.cfg.model_copy(update={"collect": task.cfg.collect.model_copy(update={"embedded": False})})
    )
    collected = list(landing_only.source.collect(incoming))
    assert [c.label for c in collected if isinstance(c, RawSample)] == [label], collected
    assert all(isinstance(c, RawSample) for c in collected), "nothing in the landing zone is rejected"
