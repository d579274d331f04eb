"""bench/paired_fits.py's arithmetic: the first process's medians alone and paired."""

from bench.paired_fits import result_row


def arm(wall: float, cpu: float, epochs: int = 12) -> dict:
    return {"wall_s": wall, "cpu_s": cpu, "fits": {"U001": [epochs, 0.5]}}


def test_the_row_gives_each_rounds_ratio_and_their_median():
    rounds = [
        {"solo": arm(10.0, 10.0), "pair": arm(11.0, 10.5)},
        {"solo": arm(12.0, 11.0), "pair": arm(12.0, 11.0)},
        {"solo": arm(11.0, 10.0), "pair": arm(13.2, 12.1)},
    ]
    row = result_row(4, rounds)
    assert "| alone: 11.0 s, 10.0 CPU-s | paired: 12.0 s, 11.0 CPU-s |" in row
    assert "ratios: wall 1.10x, CPU 1.05x" in row  # of 1.10, 1.00, 1.20; 1.05, 1.00, 1.21
    assert "round 3: 11.0 s alone, 13.2 s paired = 1.20x" in row
    assert "alone and paired: True" in row


def test_the_row_says_when_the_fits_differ():
    rounds = [{"solo": arm(10.0, 10.0, epochs=12), "pair": arm(10.0, 10.0, epochs=13)}]
    assert "alone and paired: False" in result_row(4, rounds)
