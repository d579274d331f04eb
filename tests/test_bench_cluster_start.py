"""bench/cluster_start.py's arithmetic: where a night's orchestration sits, per arm."""

from bench.cluster_start import edges, result_row, summary


def _night(first: float, last: float, flow: float, orchestration: float, wall: float) -> dict:
    spans = [["prepare-a", first, first + 1.0], ["train-b", first + 0.5, last]]
    return {"spans": spans, "flow_run_s": flow, "orchestration_s": orchestration, "wall_s": wall}


def test_a_nights_first_task_and_tail_are_read_from_its_spans():
    assert edges(_night(2.5, 20.0, 20.4, 3.1, 24.0)) == {"first_task_s": 2.5, "tail_s": 20.4 - 20.0}


def test_each_arm_is_its_medians_and_the_row_names_each_and_their_ratios():
    nights = {
        "per run": [
            {**_night(2.6, 20, 20.3, 3.0, 24), **edges(_night(2.6, 20, 20.3, 3.0, 24))},
            {**_night(2.9, 20, 20.5, 3.4, 25), **edges(_night(2.9, 20, 20.5, 3.4, 25))},
            {**_night(2.7, 20, 20.4, 3.2, 26), **edges(_night(2.7, 20, 20.4, 3.2, 26))},
        ],
        "kept by serve.py": [
            {**_night(1.1, 19, 19.2, 1.6, 23), **edges(_night(1.1, 19, 19.2, 1.6, 23))},
            {**_night(1.0, 19, 19.3, 1.4, 23), **edges(_night(1.0, 19, 19.3, 1.4, 23))},
            {**_night(1.2, 19, 19.1, 1.5, 24), **edges(_night(1.2, 19, 19.1, 1.5, 24))},
        ],
        "long-lived": [
            {**_night(0.7, 18, 18.2, 1.2, 22), **edges(_night(0.7, 18, 18.2, 1.2, 22))},
            {**_night(0.6, 18, 18.3, 0.8, 21), **edges(_night(0.6, 18, 18.3, 0.8, 21))},
            {**_night(0.8, 18, 18.1, 1.0, 23), **edges(_night(0.8, 18, 18.1, 1.0, 23))},
        ],
    }
    medians = summary(nights)
    assert medians["per run"]["orchestration_s"] == 3.2 and medians["per run"]["wall_s"] == 25
    assert medians["long-lived"]["first_task_s"] == 0.7
    row = result_row(32, 3, medians)
    assert row.startswith("| the nights after the first") and row.endswith("|")
    assert "per run: orchestration 3.2 s = 12.8% of a 25 s night" in row
    assert "long-lived: orchestration 1.0 s = 4.5% of a 22 s night" in row
    assert "kept by serve.py: orchestration 1.5 s = 6.5% of a 23 s night" in row
    assert "first task 0.70 s" in row and "first task 1.10 s" in row
    assert row.endswith("| kept 0.47x the orchestration, long-lived 0.31x |")
