"""bench/dask_cluster.py's arithmetic: the rounds' ratios and medians in its row."""

from bench.dask_cluster import result_row


def night(
    wall: float,
    train: float,
    idle: float,
    server: float,
    workers: float = 200.0,
    scheduler: float = 3.0,
    flow: float = 9.0,
) -> dict:
    return {
        "wall_s": wall,
        "stages": {"train": {"task_s": train}},
        "orchestration_s": idle,
        "server_cpu_s": server,
        "workers_cpu_s": workers,
        "scheduler_cpu_s": scheduler,
        "serve_tree_cpu_s": flow,
    }


def test_the_row_gives_each_round_and_the_median_ratio():
    rounds = [
        {1: night(300, 150, 30, 30), 2: night(180, 190, 5, 28)},  # 0.600x
        {1: night(310, 160, 31, 29), 2: night(179, 195, 6, 27)},  # 0.577x
        {1: night(290, 155, 29, 31), 2: night(183, 200, 4, 29)},  # 0.631x
    ]
    row = result_row(60, 55, "the deployment's defaults", rounds)
    assert "3 round(s)" in row
    assert "| 1 worker: 300 s | 2 workers: 180 s |" in row  # medians of each arm's walls
    assert "median ratio 0.600x" in row
    assert "round 1 (1 then 2): 300 s / 180 s = 0.600x" in row
    assert "round 2 (2 then 1): 310 s / 179 s = 0.577x" in row
    assert "round 3 (1 then 2): 290 s / 183 s = 0.631x" in row
    assert "155 s in all on 1 worker, 195 s on 2 (1.26x)" in row
    assert "the Prefect server 30 / 28" in row


def test_the_row_says_where_the_cpu_went_on_each_arm():
    rounds = [
        {1: night(300, 150, 30, 30, 250, 2, 6), 2: night(180, 190, 5, 28, 300, 4, 8)},
        {1: night(310, 160, 31, 29, 260, 3, 7), 2: night(179, 195, 6, 27, 286, 3, 10)},
    ]
    row = result_row(60, 55, "the deployment's defaults", rounds)
    assert "the workers 255 / 293 (1.15x, each warming up in it)" in row  # arms' medians
    assert "the scheduler 2 / 4" in row  # 2.5 and 3.5 round to even
    assert "the flow run 6 / 9" in row


def test_the_row_says_whether_the_workers_were_fresh_or_long_lived():
    rounds = [{1: night(300, 150, 30, 30), 2: night(180, 190, 5, 28)}]
    assert "each arm on fresh workers" in result_row(60, 55, "defaults", rounds)
    warm = result_row(60, 55, "defaults", rounds, kind="long-lived")
    assert "long-lived" in warm and "fresh workers" not in warm
    assert "warmed before the night" in warm and "warming up in it" not in warm


def test_the_row_says_the_preloaded_workers_warmed_up_as_they_started_and_how_long():
    one, two = night(300, 150, 30, 30), night(180, 190, 5, 28)
    rounds = [{1: {**one, "cluster_start_s": 16.2}, 2: {**two, "cluster_start_s": 21.7}}]
    row = result_row(60, 55, "defaults", rounds, kind="preloaded")
    assert "fresh workers started with `--preload tickercast.deployments.warm_worker`" in row
    assert "the cluster took 16 s to start with 1 worker, 22 s with 2, not in the night" in row
    assert "warmed as they started" in row and "warming up in it" not in row
