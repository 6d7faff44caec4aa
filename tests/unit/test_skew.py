from __future__ import annotations

from click.testing import CliRunner
from rtml.shared.contracts import FeatureVector, TrainingExample
from rtml.shared.eventlog import write_event_log
from rtml.shared.features.batch import compute_batch_features
from rtml.shared.features.reference import task_vectors
from rtml.shared.warehouse import Located, Warehouse

from rtml.cli import main
from rtml.tasks.eta.simulator.world import SimConfig, simulate
from rtml.tasks.eta.spec import TASK as ETA


def logged_warehouse(root, pairs, tamper: str | None = None) -> None:
    located = []
    for offset, (request, vector) in enumerate(pairs):
        if tamper is not None and offset == 3:
            values = [
                v + 1.0 if n == tamper else v
                for n, v in zip(vector.names, vector.values, strict=True)
            ]
            vector = FeatureVector(**{**vector.model_dump(), "values": values})
        example = TrainingExample(
            id=request.id, ts=request.ts + 1800, task="eta", features=vector, label=30.0,
            model_version="v1", prediction=29.0, request_ts=request.ts, label_ts=request.ts + 1800,
        )  # fmt: skip
        located.append(Located(example, "rtml.training.examples-0", offset))
    Warehouse(root).write(located)


def test_skew_finds_no_mismatch_in_logged_vectors_and_names_a_tampered_feature(
    tmp_path, monkeypatch
) -> None:
    messages = list(simulate(SimConfig(seed=5), duration_s=2 * 3600))
    log = tmp_path / "day.evl"
    write_event_log(log, messages)
    batch = {r.entity: r for r in compute_batch_features(messages)}
    pairs = task_vectors(messages, ETA, batch=batch)[:50]
    runner = CliRunner()

    monkeypatch.setenv("RTML_WAREHOUSE", str(tmp_path / "clean"))
    logged_warehouse(tmp_path / "clean", pairs)
    clean = runner.invoke(main, ["skew", "--event-log", str(log)])
    assert clean.exit_code == 0, clean.output
    assert "compared 50 logged vectors" in clean.output and "no mismatch" in clean.output

    monkeypatch.setenv("RTML_WAREHOUSE", str(tmp_path / "skewed"))
    logged_warehouse(tmp_path / "skewed", pairs, tamper="restaurant_orders_30m")
    skewed = runner.invoke(main, ["skew", "--event-log", str(log)])
    assert skewed.exit_code == 1
    assert "restaurant_orders_30m: 1 mismatches" in skewed.output


def test_batch_features_come_from_the_batch_log_when_it_is_not_the_event_log(
    tmp_path, monkeypatch
) -> None:
    messages = list(simulate(SimConfig(seed=6), duration_s=2 * 3600))
    split = messages[0].ts + 3600
    warmup = [m for m in messages if m.ts < split]
    live = [m for m in messages if m.ts >= split]
    write_event_log(tmp_path / "warmup.evl", warmup)
    write_event_log(tmp_path / "live.evl", live)
    served = {r.entity: r for r in compute_batch_features(warmup)}
    monkeypatch.setenv("RTML_WAREHOUSE", str(tmp_path / "warehouse"))
    logged_warehouse(tmp_path / "warehouse", task_vectors(live, ETA, batch=served)[:40])
    runner = CliRunner()

    own_log = runner.invoke(main, ["skew", "--event-log", str(tmp_path / "live.evl")])
    assert own_log.exit_code == 1
    assert "restaurant_hist_prep_mean_min" in own_log.output

    args = ["skew", "--event-log", str(tmp_path / "live.evl")]
    warmup_batch = runner.invoke(main, [*args, "--batch-log", str(tmp_path / "warmup.evl")])
    assert warmup_batch.exit_code == 0, warmup_batch.output
    assert "compared 40 logged vectors" in warmup_batch.output
