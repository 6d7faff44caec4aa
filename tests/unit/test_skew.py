from __future__ import annotations

from click.testing import CliRunner

from rtml.cli import main
from services.features.batch import compute_batch_features
from services.features.reference import eta_vectors
from services.simulator.eventlog import write_event_log
from services.simulator.world import SimConfig, simulate
from shared.contracts import FeatureVector, TrainingExample
from shared.warehouse import Located, Warehouse


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
    pairs = eta_vectors(messages, batch=batch)[:50]
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
