"""Terminal progress bars (tickercast/progress.py): when they show, what they show for a fit,
a backtest, a search and an ingest, that bars off change nothing, and the real CLI in a
pseudo-terminal."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from tests.synthetic import random_walk
from tickercast import progress
from tickercast.market import lake
from tickercast.market.ingest import INGEST_BAR, ingest_ticker
from tickercast.market.retry import Fetched

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def console() -> tuple[object, io.StringIO]:
    """A rich Console that draws like a 120-column terminal into a string."""
    from rich.console import Console

    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120, color_system=None), out


def plain(text: str) -> str:
    return ANSI.sub("", text)


# --- when bars show --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "env", "tty", "on"),
    [
        (None, {}, True, True),  # a person at a terminal
        (None, {}, False, False),  # piped, a worker, a served deployment
        (None, {"CI": "true"}, True, False),  # CI services set CI, even with a pty
        (None, {"CI": "0"}, True, True),
        (None, {"TERM": "dumb"}, True, False),
        (None, {"TICKERCAST_PROGRESS": "on"}, False, True),
        (None, {"TICKERCAST_PROGRESS": "on", "CI": "1"}, False, True),
        (None, {"TICKERCAST_PROGRESS": " OFF "}, True, False),
        (None, {"TICKERCAST_PROGRESS": "auto", "CI": "1"}, True, False),
        (True, {"TICKERCAST_PROGRESS": "off"}, False, True),  # the CLI flag wins
        (False, {"TICKERCAST_PROGRESS": "on"}, True, False),
    ],
)
def test_mode_decision(flag, env, tty, on):
    assert progress.decide(flag, env, tty) is on


def test_dask_worker_processes_turn_auto_off_but_not_an_explicit_on():
    assert progress.decide(None, {}, True, worker_processes=True) is False
    assert progress.decide(None, {"TICKERCAST_PROGRESS": "on"}, True, True) is True
    assert progress.decide(True, {}, True, worker_processes=True) is True


def test_unknown_setting_is_refused_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"TICKERCAST_PROGRESS='yes' .*\['on', 'off', 'auto'\]"):
        progress.decide(None, {"TICKERCAST_PROGRESS": "yes"}, True)


def test_cli_turns_bars_on_for_its_command_only_as_decided(monkeypatch, capsys):
    from tickercast.app import cli

    seen = []
    monkeypatch.setitem(cli.COMMANDS, "ingest", lambda args: seen.append(progress.enabled()) or 0)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(progress.ENV, raising=False)
    assert cli.main(["ingest"]) == 0  # pytest's stderr is no terminal
    assert cli.main(["--progress", "ingest"]) == 0
    monkeypatch.setenv(progress.ENV, "on")
    assert cli.main(["ingest"]) == 0
    assert cli.main(["--no-progress", "ingest"]) == 0
    assert seen == [False, True, True, False]
    assert not progress.enabled()  # only for the command
    monkeypatch.setenv(progress.ENV, "sometimes")
    assert cli.main(["ingest"]) == 1
    assert capsys.readouterr().err.strip() == (
        "tickercast ingest: error: ValueError: TICKERCAST_PROGRESS='sometimes' is not one of "
        "['on', 'off', 'auto']"
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_in_a_terminal_shows_bars_unless_dask_workers_run_the_tasks(monkeypatch, tmp_path):
    from tickercast.app import cli

    seen = []
    for command in ("ingest", "retrain"):
        monkeypatch.setitem(cli.COMMANDS, command, lambda a: seen.append(progress.enabled()) or 0)
    for name in ("CI", progress.ENV, "TERM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "stderr", Terminal())
    config = tmp_path / "dask.json"
    config.write_text('{"task_runner": "dask", "epochs": 3}')
    assert cli.main(["ingest"]) == 0
    assert cli.main(["retrain", "--task-runner", "threads"]) == 0
    assert cli.main(["retrain", "--task-runner", "dask"]) == 0
    assert cli.main(["retrain", "--config", str(config)]) == 0
    assert cli.main(["retrain", "--config", str(config), "--task-runner", "threads"]) == 0
    assert cli.main(["--progress", "retrain", "--task-runner", "dask"]) == 0
    assert seen == [True, True, False, False, True, True]


# --- bars off --------------------------------------------------------------------------


OFF_RUN = """
import sys
sys.path.insert(0, {root!r})
from tests.test_progress import naive_fit
from tests.synthetic import random_walk
from tickercast import progress
from tickercast.backtest.walkforward import walk_forward
from tickercast.market.ingest import ingest_ticker
from tickercast.sections import FitSpec, PreprocessSettings, WalkForward

assert progress.track("x", total=3) is progress.NULL_BAR
with progress.track("x", total=3) as bar, progress.tally("y"):
    bar.advance()
ingest_ticker("SINE", "sine", {data!r})
from pathlib import Path
walk = WalkForward(walk_forward_folds=2, walk_forward_epochs=1)
section = PreprocessSettings(**{pre!r})
walk_forward(random_walk(), section, FitSpec(), walk, Path({data!r}), fit=naive_fit)
print("rich imported:", "rich" in sys.modules)
"""


def test_bars_off_import_no_rich_and_print_nothing(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", OFF_RUN.format(root=str(ROOT), data=str(tmp_path), pre=PRE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "rich imported: False\n"
    assert proc.stderr == ""


def test_bars_of_parallel_threads_are_lines_of_one_display():
    both_open = threading.Barrier(2, timeout=30)

    def branch(ticker: str) -> None:
        with progress.track(f"{ticker} epochs", total=2) as bar:
            both_open.wait()
            bar.advance()
            both_open.wait()  # both at 1/2 before either finishes
            bar.advance()

    rich_console, out = console()
    with progress.session(True, rich_console):
        threads = [threading.Thread(target=branch, args=(t,)) for t in ("AAA", "BBB")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    frames = plain(out.getvalue()).split("\r")
    together = [f for f in frames if "AAA epochs" in f and "BBB epochs" in f]
    two_lines = r"(AAA|BBB) epochs .* 1/2 .*\n(AAA|BBB) epochs .* 1/2 "
    assert any(re.search(two_lines, f) for f in together), together
    assert not progress.enabled()


# --- a fit -----------------------------------------------------------------------------


def _fit_logged(tmp_path: Path, caplog) -> tuple[dict, list[str]]:
    from tests.test_train import sine_data, tiny_fit
    from tickercast.modeling.train import fit, per_ticker_data

    _, arrays, anchors = sine_data()
    # seeded: a step this large stops early after 3 of 12 epochs (best: epoch 2)
    cfg = tiny_fit(model="lstm", units=[4], learning_rate=0.3, epochs=12)
    cfg = cfg.model_copy(update={"patience": 1, "reduce_lr_patience": 50})
    logger = logging.getLogger("tickercast.test.progress")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=logger.name):
        summary, _ = fit(per_ticker_data(arrays, anchors), 10, cfg, tmp_path, logger, label="SINE")
    # the same run logs the same lines; only the measured speed differs
    lines = [re.sub(r"samples/s=\d+", "samples/s=N", r.getMessage()) for r in caplog.records]
    return summary, lines


def test_a_fit_shows_its_epochs_and_early_stop_and_logs_the_same_lines(tmp_path, caplog):
    off_summary, off_lines = _fit_logged(tmp_path / "off", caplog)

    rich_console, out = console()
    handler = logging.StreamHandler(sys.stderr)  # a terminal log handler, as Prefect's
    logging.getLogger("tickercast.test.progress").addHandler(handler)
    try:
        with progress.session(True, rich_console):
            on_summary, on_lines = _fit_logged(tmp_path / "on", caplog)
            assert handler.stream is sys.stderr, "handlers are restored once no bar shows"
    finally:
        logging.getLogger("tickercast.test.progress").removeHandler(handler)

    assert off_summary["epochs_run"] == on_summary["epochs_run"] == 3
    assert on_lines == off_lines
    assert "SINE epoch 3/12: loss=" in " ".join(off_lines)
    text = plain(out.getvalue())
    assert re.search(r"SINE epochs · loss [\d.e-]+ val_loss [\d.e-]+ .* 2/12 ", text)
    final = re.search(r"SINE epochs · stopped early, best epoch 2 .*\b3/12\b", text)
    assert final, text[-2000:]
    # the log lines went through the display, above the bar, each on its own line
    assert re.search(r"[\r\n]SINE epoch 3/12: loss=", text)
    assert text.index("SINE epoch 3/12: loss=") < final.start()


# --- backtests -------------------------------------------------------------------------


PRE = {
    "start": None,
    "end": None,
    "features": ["close"],
    "lookback": 20,
    "horizon": 1,
    "target": "close",
    "val_fraction": 0.15,
    "test_fraction": 0.15,
}


def naive_fit(seen, anchors, spec, cfg, out_dir, logger):
    """A `fit` for the backtests without Keras: forecasts the last close."""
    from tickercast.evaluation.baselines import naive_forecast

    return (lambda arrays, a: naive_forecast(arrays["close"], a)[:, None]), {"epochs_run": 0}


def test_walk_forward_and_rolling_backtest_show_folds_and_refits(tmp_path):
    from tickercast.backtest.rolling import rolling_backtest
    from tickercast.backtest.walkforward import walk_forward
    from tickercast.sections import FitSpec, PreprocessSettings, RollingSpec, WalkForward

    rich_console, out = console()
    with progress.session(True, rich_console):
        walk = WalkForward(walk_forward_folds=3, walk_forward_epochs=1)
        section = PreprocessSettings(**PRE)
        walk_forward(
            random_walk(), section, FitSpec(), walk, tmp_path / "wf", fit=naive_fit, who="RW"
        )
        cfg = {
            **{k: v for k, v in PRE.items() if k != "test_fraction"},
            "model": ["lstm", "naive"],
            "initial": 400,
            "step": 10,
            "window": "expanding",
            "refit_every": 10,
            "ma_window": 5,
            "ridge_lags": 1,
            "ridge_alpha": 1.0,
            "max_lag": None,
            "seed": 1,
        }
        spec = RollingSpec(**cfg)
        result = rolling_backtest(random_walk(), spec, tmp_path / "bt", fit=naive_fit, who="RW")
    text = plain(out.getvalue())
    assert re.search(r"RW walk-forward folds .* 3/3 ", text)
    origins = result["origins"]["origins"]
    fits = len(result["folds"]["lstm"])
    assert fits == -(-origins // 10) > 1
    assert re.search(
        rf"RW backtest lstm refits · {origins}/{origins} origins .* {fits}/{fits} ", text
    )
    assert not progress.enabled()


# --- a search --------------------------------------------------------------------------


def test_tune_trials_bar_counts_ended_trials_and_shows_the_best(tmp_path):
    from tests.test_tune import tiny
    from tickercast.tuning.search import Search, run_lock

    config = tiny(max_trials=3, data_dir=str(tmp_path))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rich_console, out = console()
    with progress.session(True, rich_console):
        with run_lock(run_dir), Search(config, run_dir).progress() as search:
            first = search.propose("slot-0")
            search.record(first.trial_id, {"val_mse": 0.5, "epochs_run": 1})
            second = search.propose("slot-0")
            search.fail(second.trial_id, OSError("worker lost"))  # queued again: not ended
            again = search.propose("slot-0")
            search.record(again.trial_id, {"val_mse": 0.25, "epochs_run": 1})
        with run_lock(run_dir), Search(config, run_dir).progress():  # a rerun starts where
            pass  # it ended
    text = plain(out.getvalue())
    assert re.search(r"tune run trials · best val_mse 0.5 \(trial 0000\) .* 1/3 ", text)
    assert re.search(r"tune run trials · best val_mse 0.25 \(trial 0001\) .* 2/3 ", text)
    assert " 3/3 " not in text


# --- an ingest -------------------------------------------------------------------------


def test_tickers_ingested_in_threads_share_one_bar(tmp_path):
    tickers = ["AAA", "BBB", "CCC"]
    all_started = threading.Barrier(len(tickers), timeout=60)

    def fetch(ticker, start, end, period) -> Fetched:
        all_started.wait()  # every ticker is under way before any ends
        return Fetched(random_walk(30, seed=len(ticker)))

    rich_console, out = console()
    with progress.session(True, rich_console):
        threads = [
            threading.Thread(
                target=ingest_ticker, args=(t, "yfinance", tmp_path), kwargs={"fetch": fetch}
            )
            for t in tickers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert all(len(lake.read_partition(tmp_path, t)) == 30 for t in tickers)
    text = plain(out.getvalue())
    assert text.count(INGEST_BAR) >= 1
    assert re.search(rf"{INGEST_BAR} .* 3/3 ", text), text[-2000:]
    assert not re.search(rf"{INGEST_BAR} .* [12]/[12] ", text), "one bar, not one per thread"


# --- the real CLI in a pseudo-terminal -------------------------------------------------


def run_in_pty(argv: list[str], env: dict, timeout: float = 600) -> tuple[int, str]:
    """Run a command with stdin/stdout/stderr on a 120x40 pseudo-terminal; its exit code and
    everything it wrote, as a terminal receives it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, close_fds=True
    )
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child side closed
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_cli_retrain_in_a_terminal_shows_bars_above_which_logs_scroll(prefect_server, tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if k not in ("CI", progress.ENV)}
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), TERM="xterm-256color")
    argv = [sys.executable, "-m", "tickercast.app.cli", "retrain", "--source", "sine"]
    argv += ["--tickers", "SINE", "--epochs", "10", "--patience", "20", "--units", "4", "4"]
    argv += ["--lookback", "5", "--horizon", "1", "--features", "close", "--target", "close"]
    argv += ["--data-dir", str(tmp_path)]

    code, raw = run_in_pty(argv, env)

    text = plain(raw)
    assert code == 0, text[-3000:]
    assert re.search(r"SINE epochs · loss [\d.e-]+ val_loss [\d.e-]+ .*10/10 ", text), text[-3000:]
    assert re.search(r"ingest tickers .* 1/1 ", text)
    assert "SINE: bundle" in text  # the command's own output
    # today's log lines are all there, each starting at the left edge: the bar's line is
    # erased (\r ESC[2K) before a log line is printed above it
    for epoch in range(1, 11):
        line = f"SINE epoch {epoch}/10: loss="
        assert line in text
        at = raw.index(line)
        start = raw.rfind("\n", 0, at) + 1
        prefix = plain(raw[start:at].split("\x1b[2K")[-1]).lstrip("\r")
        assert re.fullmatch(r"[\d:.]+ \| INFO +\| Task run 'train-\w+' - ", prefix), prefix
    assert raw.rfind("\x1b[?25h") > raw.rfind("\x1b[?25l"), "the cursor is shown again"


def test_the_longest_bar_labels_are_whole_at_160_columns():
    """A person's 160-column terminal shows every label in full (an epochs bar of a
    walk-forward fold with its losses and a tune bar with its best trial), not clipped."""
    from rich.console import Console

    labels = [
        "BRK-B fold 12 epochs · loss 0.0001234 val_loss 0.0001234",
        "BRK-B fold 12 epochs · stopped early, best epoch 118",
        "tune nightly-2026-12-02-recommended trials · best val_mse 0.0001234 (trial 0117)",
        "BRK-B walk-forward folds",
    ]
    out = io.StringIO()
    wide = Console(file=out, force_terminal=True, width=160, color_system=None)
    with progress.session(True, wide):
        bars = [progress.track(label, total=200, completed=100) for label in labels]
        for bar in bars:
            bar.__enter__()
        time.sleep(0.6)  # a refresh draws every bar
        for bar in reversed(bars):
            bar.__exit__(None, None, None)
    frames = plain(out.getvalue())
    for label in labels:
        assert label in frames, (label, frames[-2000:])
    assert "…" not in frames
