"""The figures of bench/bench_operators.py: request counting from kube-apiserver's /metrics and
the table of medians, spreads and ratios. Pure functions; no API server."""

from __future__ import annotations

from collections import Counter

from bench import report

METRICS = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="helm.toolkit.fluxcd.io",resource="helmreleases",scope="resource",subresource="",verb="APPLY",version="v2"} 10
apiserver_request_total{code="201",component="apiserver",dry_run="",group="helm.toolkit.fluxcd.io",resource="helmreleases",scope="resource",subresource="",verb="APPLY",version="v2"} 5
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps.vworkspace.io",resource="applicationinstances",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 99
"""


def test_requests_are_summed_over_codes_and_unrelated_resources_dropped() -> None:
    counts = report.parse_requests(METRICS)
    assert counts == Counter(
        {
            ("APPLY", "helmreleases", ""): 15,
            ("PUT", "applicationinstances", "status"): 7,
            ("PUT", "leases", ""): 3,
        }
    )
    assert report.writes(counts) == 22
    assert report.by_verb(counts, report.MAIN) == {"APPLY": 15, "PUT": 7}
    assert report.others(counts) == {"leases": {"PUT": 3}}
    line = report.verb_line(report.per_instance({"APPLY": 20, "PUT": 10, "LIST": 1}, 10))
    assert line == "writes 3 (APPLY 2, PUT 1); reads: LIST 0.1"


def test_cells_give_the_median_and_the_spread_of_several_runs() -> None:
    assert report.cell([20.7, 27.6, 22.0], "s") == "22.0 [20.7-27.6] s"
    assert report.cell([108.0], "MiB") == "108.0 MiB"
    assert report.cell([0, 0, 2]) == "0 [0-2]"
    assert report.cell([]) == "-"
    assert report.ratio([60.0, 66.0, 62.0], [17.5]) == "3.54x"
    assert report.ratio([1.0], []) == "-"
    assert report.ratio([1.0], [0.0]) == "-"


def test_the_table_has_a_ratio_column_per_peer_and_skips_failed_runs() -> None:
    results = [
        {"contender": "vworkspace", "scenario": "burst", "run": 1, "seconds": 20.0},
        {"contender": "vworkspace", "scenario": "burst", "run": 2, "seconds": 30.0},
        {"contender": "vworkspace", "scenario": "burst", "run": 3, "error": "hung"},
        {"contender": "kopf", "scenario": "burst", "run": 1, "seconds": 10.0},
        {"contender": "bare", "scenario": "burst", "run": 1, "seconds": 5.0},
    ]
    lines = report.table(results, ["vworkspace", "kopf", "bare"]).splitlines()
    assert [cell.strip() for cell in lines[0].split("|")[1:-1]] == [
        "figure",
        "vworkspace",
        "kopf",
        "bare",
        "vworkspace/kopf",
        "vworkspace/bare",
    ]
    assert len({len(line) for line in lines}) == 1  # aligned
    assert [cell.strip() for cell in lines[2].split("|")[1:-1]] == [
        "burst: all reconciled",
        "25.0 [20.0-30.0] s",
        "10.0 s",
        "5.0 s",
        "2.50x",
        "5.00x",
    ]
    assert len(lines) == 3  # only the figures some run measured
