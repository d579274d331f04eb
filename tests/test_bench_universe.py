"""The universe benchmarks' own arithmetic: which patience a recording's fits ran, what
the replay of a shorter one gives, and how a night's orchestration is projected."""

import json

import pytest

from bench.nightly_universe import _projected
from bench.universe_levers import _ran_patience, stopping


def _fit(val_loss: list[float], patience: int) -> dict:
    best = min(range(len(val_loss)), key=val_loss.__getitem__) + 1
    ran = min(len(val_loss), best + patience)
    return {
        "val_loss": val_loss[:ran],
        "epochs_run": ran,
        "best_epoch": best,
        "alpha": 0.0,
        "learning_rate": [1e-3] * ran,
    }


def _recording(patience: int, with_patience: bool) -> dict:
    curves = [
        [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99],  # best at 2
        [1.0, 0.98, 0.99, 0.995, 0.999, 0.97, 0.975, 0.976, 0.977, 0.978],  # best at 6
        [1.0, 1.01, 1.02, 1.03, 1.04, 1.05, 1.06],  # best at 1
    ]
    fits = {f"T{i}": _fit(c, patience) for i, c in enumerate(curves)}
    recorded = {"overrides": {}, "sizes": [{"nights": [{"fits": fits}]}]}
    if with_patience:
        recorded["patience"] = patience
    return recorded


@pytest.mark.parametrize("patience", [3, 4])
def test_the_patience_a_recording_ran_is_read_from_its_fits(patience):
    assert _ran_patience(_recording(patience, with_patience=False)) == patience


@pytest.mark.parametrize("with_patience", [True, False])
def test_the_replay_reproduces_the_runs_and_stops_shorter_ones_sooner(tmp_path, with_patience):
    path = tmp_path / "night.json"
    path.write_text(json.dumps(_recording(4, with_patience)))
    result = stopping(path, patiences=(3,))
    assert result["run_patience"] == 4 and result["replay_matches_the_runs"]
    assert result["patience 4"]["epochs"] == 6 + 10 + 5
    # patience 3 stops each run sooner; the second stops at its fifth epoch, before its
    # best (the sixth): its second epoch's 0.98 is kept, 0.98 / 0.97 - 1 of regret
    assert result["patience 3"]["epochs"] == 5 + 5 + 4
    assert result["patience 3"]["val_loss_regret_max"] == pytest.approx(0.98 / 0.97 - 1)


def _size(tickers: int, wall: float, orchestration: float) -> dict:
    night = {"wall_s": wall, "peak_rss_mb": 1000.0 + tickers, "orchestration_s": orchestration}
    return {"tickers": tickers, "nights": [night, night]}


def test_flat_orchestration_is_given_as_a_share_of_the_projected_night():
    sizes = [_size(32, 100.0, 6.5), _size(100, 300.0, 6.2)]
    text = _projected(sizes, 1)
    wall_at_500 = 100.0 + (300.0 - 100.0) / (100 - 32) * (500 - 32)
    assert "not growing with the universe (6.2-6.5 s measured" in text
    assert f"the larger is {6.5 / wall_at_500:.1%} of the projected night" in text


def test_growing_orchestration_is_projected_along_its_line():
    sizes = [_size(32, 100.0, 2.0), _size(100, 300.0, 4.0)]
    assert "s = " in _projected(sizes, 1) and "not growing" not in _projected(sizes, 1)


def _small_network():
    import numpy as np

    from tickercast.modeling.models import build_model, model_seed

    model = build_model("stacked_lstm", 12, 2, [8, 4], compile=False, seed=model_seed(3))
    rng = np.random.default_rng(0)
    x = rng.random((16, 12, 2)).astype(np.float32)
    return model, x, rng.random((16, 1)).astype(np.float32)


def test_the_other_lstm_kernels_give_keras_losses_and_gradients():
    """bench/stacked_lstm's fused and hoisted kernels compute Keras' layers: the README's
    comparison of their speed is a comparison of the same arithmetic."""
    from bench.stacked_lstm import KERNELS, kernel_checks

    model, x, y = _small_network()
    checks = kernel_checks(model, x, y)
    assert set(checks) == set(KERNELS)
    for kernel, check in checks.items():
        assert check["loss_abs_diff"] < 1e-6, kernel
        assert check["grad_max_abs_diff"] < 1e-5, kernel


def test_tensorflow_registers_a_wrong_gradient_for_its_fused_lstm_v2():
    """What the README says of TensorFlow 2.21: BlockLSTMV2's registered gradient (the V1
    op's) is not its gradient, which is why the bench supplies BlockLSTMGradV2. When a
    TensorFlow release fixes it, this fails and the README's sentence goes."""
    import tensorflow as tf

    model, x, y = _small_network()
    cell = model.get_layer("lstm_0").cell
    w = tf.concat([cell.kernel, cell.recurrent_kernel], axis=0)
    b = tf.convert_to_tensor(cell.bias)
    zeros = tf.zeros([cell.units])
    state = tf.zeros([len(x), cell.units])
    xt = tf.transpose(tf.constant(x), [1, 0, 2])

    def loss(fused: bool):
        with tf.GradientTape() as tape:
            tape.watch(b)
            if fused:
                from bench.stacked_lstm import _fused_lstm

                _, h = _fused_lstm(xt, state, state, w, b)
            else:
                *_, h = tf.raw_ops.BlockLSTMV2(
                    seq_len_max=tf.constant(len(xt), tf.int64),
                    x=xt,
                    cs_prev=state,
                    h_prev=state,
                    w=w,
                    wci=zeros,
                    wcf=zeros,
                    wco=zeros,
                    b=b,
                    cell_clip=0.0,
                    use_peephole=False,
                )
            value = tf.reduce_sum(tf.square(h[-1]))
        return float(value), tape.gradient(value, b).numpy()

    (registered_loss, registered), (own_loss, own) = loss(False), loss(True)
    assert registered_loss == own_loss  # the same forward pass
    assert abs(registered - own).max() > 1e-3  # a different gradient


def test_a_measured_500_is_reported_as_measured_beside_the_line_of_the_smaller_sizes():
    sizes = [_size(32, 100.0, 2.0), _size(100, 300.0, 4.0), _size(500, 1200.0, 30.0)]
    sizes[2]["nights"] = [
        {"wall_s": 1200.0, "orchestration_s": 30.0, "peak_rss_mb": 3000.0},
        {"wall_s": 150.0, "orchestration_s": 6.0, "peak_rss_mb": 3000.0},
    ]
    first, second = _projected(sizes, 0), _projected(sizes, 1)
    line = 100.0 + (300.0 - 100.0) / (100 - 32) * (500 - 32)  # the smaller sizes' line
    assert first.startswith("500 tickers measured: 20.0 min (target <= 30 min)")
    assert "orchestration 30.0 s = 2.5% of the night" in first
    assert f"the line over the smaller sizes projected {line / 60:.1f} min" in first
    assert "orchestration 6.0 s = 4.0% of the night" in second
    assert "0.12x the first night (target <= 1/6)" in second


def test_a_kept_clusters_rows_are_tagged_apart_from_the_defaults():
    """--kept-cluster measures a user's option: its rows must not replace the default's."""
    from bench.nightly_universe import _tagged

    rows = {"nightly_universe": "| a |", "nightly_universe_second": "| b |"}
    assert _tagged(rows, 0) == rows
    assert _tagged(rows, 2) == {
        "nightly_universe_kept_cluster": "| a |",
        "nightly_universe_second_kept_cluster": "| b |",
    }
