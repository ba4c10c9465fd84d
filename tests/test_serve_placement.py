"""`python -m model.serve`'s replicas against the cluster's CPUs, worked out before anything deploys."""

from __future__ import annotations

import argparse

import pytest

from model.serve.placement import PlacementError, Replicas, check_gpus, cpus_argument, plan_cpus

TWO_CPUS = {"CPU": 2.0}


def test_auto_fits_two_story_replicas_and_a_why_replica_on_two_cpus() -> None:
    groups = {"story": Replicas(2, 2), "/why": Replicas(1, 1)}
    share = plan_cpus(None, TWO_CPUS, groups)
    assert share == pytest.approx(0.66) and share * 3 <= 2.0


def test_auto_counts_the_most_replicas_autoscaling_may_start_and_gives_one_cpu_at_most() -> None:
    assert plan_cpus(None, {"CPU": 16.0}, {"story": Replicas(1, 3), "/why": Replicas(1, 1)}) == 1.0
    assert plan_cpus(None, TWO_CPUS, {"story": Replicas(1, 7), "/why": Replicas(1, 1)}) == pytest.approx(0.25)


def test_an_explicit_share_that_cannot_be_placed_is_refused_with_its_numbers() -> None:
    with pytest.raises(PlacementError) as refused:
        plan_cpus(1.0, TWO_CPUS, {"story": Replicas(2, 2), "/why": Replicas(1, 1)})
    message = str(refused.value)
    assert "2 story + 1 /why replicas × 1 CPU each need 3 CPUs, but the cluster has 2" in message
    assert "--cpus-per-replica 0.66" in message
    assert plan_cpus(0.5, TWO_CPUS, {"story": Replicas(2, 2), "/why": Replicas(1, 1)}) == 0.5


def test_gpus_the_cluster_lacks_are_refused() -> None:
    check_gpus(0.0, TWO_CPUS, {"story": Replicas(4, 4)})
    with pytest.raises(PlacementError, match="need 4 GPUs to start"):
        check_gpus(1.0, {"CPU": 8.0, "GPU": 2.0}, {"story": Replicas(4, 4)})


@pytest.mark.parametrize(
    ("text", "expected"), [("2", Replicas(2, 2)), ("1-4", Replicas(1, 4)), ("0-3", Replicas(0, 3))]
)
def test_replicas_are_a_number_or_a_range(text: str, expected: Replicas) -> None:
    assert Replicas.parse(text) == expected and Replicas.parse(text).autoscaled == (expected.maximum > expected.minimum)


@pytest.mark.parametrize("text", ["0", "4-2", "two", "-1", "1-"])
def test_replicas_that_make_no_sense_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        Replicas.parse(text)


def test_cpus_are_auto_or_a_number() -> None:
    assert cpus_argument("auto") is None and cpus_argument("0.5") == 0.5
    for bad in ("-1", "nan", "many"):
        with pytest.raises(argparse.ArgumentTypeError):
            cpus_argument(bad)


def test_the_command_line_defaults_to_auto_and_exposes_autoscaling() -> None:
    from model.serve.__main__ import parse_args

    defaults = parse_args([])
    assert defaults.cpus_per_replica is None and defaults.replicas == Replicas(1, 1)
    scaled = parse_args(["--replicas", "1-4", "--why-replicas", "1-2", "--target-ongoing-requests", "6"])
    assert (scaled.replicas, scaled.why_replicas, scaled.target_ongoing_requests) == (Replicas(1, 4), Replicas(1, 2), 6)


def test_a_range_becomes_serves_autoscaling_config() -> None:
    pytest.importorskip("ray")
    from model.serve.app import scaling

    assert scaling(Replicas(2, 2), 8.0) == {"num_replicas": 2}
    assert scaling(Replicas(1, 4), 8.0) == {
        "num_replicas": "auto",
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8.0},
    }
