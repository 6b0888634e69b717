"""The pure pieces of onnx-server's inference hot path: the route match, the per-request metrics' exposition
and the shared tensor checks."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
from onnx_server.app import infer_route
from onnx_server.errors import BadRequest
from onnx_server.metrics import LATENCY_BUCKETS, Metrics
from onnx_server.protocol import (
    DTYPES,
    TensorMeta,
    check_against,
    check_input,
    check_input_name,
    check_shape,
    data_array,
)
from prometheus_client.parser import text_string_to_metric_families


@pytest.mark.parametrize(("path", "route"), [
    ("/v2/models/m/infer", ("m", None)),
    ("/v2/models/m/versions/2/infer", ("m", "2")),
    ("/v2/models/a.b-c/versions/v1.0/infer", ("a.b-c", "v1.0")),
    ("/v2/models/infer/infer", ("infer", None)),
    ("/v2/models//infer", None),  # an empty name is no {name} for Starlette either: 404 there
    ("/v2/models/m/versions//infer", None),
    ("/v2/models/m/versions/2/3/infer", None),
    ("/v2/models/m/other/2/infer", None),
    ("/v2/models/m/infer/", None),  # Starlette redirects it
    ("/v2/models/m", None),
    ("/v2/models/m/ready", None),
    ("/v1/models/m/infer", None),
])
def test_infer_route_matches_exactly_starlettes_two_infer_paths(path: str,
                                                                route: tuple[str, str | None] | None) -> None:
    assert infer_route(path) == route


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def test_request_series_count_each_request_once_in_the_right_bucket() -> None:
    m = Metrics("m", "1", "web")
    for seconds in (0.001, 0.0010001, 0.004, 20.0):  # a bound is inclusive; past the last bucket: +Inf only
        m.request_done(200, seconds)
    m.request_done(400, 0.0001, "grpc")
    m.in_flight["rest"] += 2
    m.in_flight["rest"] -= 1
    got = samples(m)
    rest = (("model", "m"), ("modeldeployment", "web"), ("protocol", "rest"), ("version", "1"))

    def bucket(le: str) -> float:
        return got["onnx_server_request_duration_seconds_bucket", tuple(sorted((*rest, ("le", le))))]
    assert bucket("0.001") == 1 and bucket("0.0025") == 2 and bucket("0.005") == 3 and bucket("10.0") == 3
    assert bucket("+Inf") == 4 and got["onnx_server_request_duration_seconds_count", rest] == 4
    assert got["onnx_server_request_duration_seconds_sum", rest] == pytest.approx(20.0060001)
    code = tuple(sorted((*rest, ("code", "200"))))
    assert got["onnx_server_requests_total", code] == 4
    grpc = tuple(sorted((("code", "400"), ("model", "m"), ("modeldeployment", "web"), ("protocol", "grpc"),
                         ("version", "1"))))
    assert got["onnx_server_requests_total", grpc] == 1
    assert got["onnx_server_in_flight_requests", rest] == 1
    assert len([k for k in got if k[0] == "onnx_server_request_duration_seconds_bucket"]) == \
        2 * (len(LATENCY_BUCKETS) + 1)  # both protocols' series exist from the start, as the gates expect


def test_batch_series_count_runs_rows_and_waits() -> None:
    m = Metrics("m", "1")
    m.observe_batch([0.0, 0.003], 2, 0.0004)
    m.observe_batch((0.0,), 1, 0.02)
    got = samples(m)
    labels = (("model", "m"), ("modeldeployment", ""), ("version", "1"))
    assert got["onnx_server_queue_duration_seconds_count", labels] == 3
    assert got["onnx_server_batch_size_sum", labels] == 3
    assert got["onnx_server_batch_size_bucket", tuple(sorted((*labels, ("le", "1.0"))))] == 1
    assert got["onnx_server_inference_duration_seconds_bucket", tuple(sorted((*labels, ("le", "0.001"))))] == 1


@pytest.mark.parametrize("shape", [[True, 4], [1, -1], [1.0, 4], "1,4", [1] * 17, None, [1, None]])
def test_check_shape_refuses_what_is_no_shape(shape: object) -> None:
    with pytest.raises(BadRequest, match="shape must be a list"):
        check_shape(shape, "inputs[0]", 1 << 20)


def test_check_shape_counts_elements_against_the_limit() -> None:
    assert check_shape([2, 3], "inputs[0]", 6) == [2, 3]
    assert check_shape([0, 1 << 40], "inputs[0]", 6) == [0, 1 << 40]  # empty: no elements at all
    with pytest.raises(BadRequest, match="has 8 elements; the limit is 6"):
        check_shape([2, 4], "inputs[0]", 6)


def test_check_against_takes_dynamic_dimensions_and_refuses_others() -> None:
    meta = TensorMeta("x", "FP32", [-1, 4])
    check_against(meta, "FP32", [7, 4], "inputs[0]")
    for shape in ([7, 5], [4], [1, 4, 1]):
        with pytest.raises(BadRequest, match="does not fit"):
            check_against(meta, "FP32", shape, "inputs[0]")
    with pytest.raises(BadRequest, match="takes FP32"):
        check_against(meta, "INT64", [1, 4], "inputs[0]")


INPUTS = {"x": TensorMeta("x", "FP32", [-1, 4]), "y": TensorMeta("y", "INT64", [2])}


def one_by_one(i: int, name: str, datatype: object, shape: object, seen: dict[str, object],
               max_elements: int) -> tuple[str, list[int], int]:
    """What check_input promises to be: the three checks in their order."""
    where = f"inputs[{i}]"
    datatype = check_input_name(name, datatype, seen, INPUTS, where)  # type: ignore[arg-type]
    checked = check_shape(shape, where, max_elements)
    check_against(INPUTS[name], str(datatype), checked, where)
    return str(datatype), checked, math.prod(checked)


def outcome(call: Callable[[], tuple[str, list[int], int]]) -> object:
    try:
        return call()
    except BadRequest as exc:
        return exc.message


@pytest.mark.parametrize("seen", [{}, {"x": None}])
def test_check_input_accepts_and_refuses_exactly_as_the_checks_one_by_one(seen: dict[str, object]) -> None:
    names = ["x", "y", "z"]
    datatypes: list[object] = ["FP32", "INT64", "NOPE", None, 5, True]
    shapes: list[object] = [[1, 4], [7, 4], [0, 4], [0, 1 << 40], [2], [True, 4], [1, True], [1, -1], [1.0, 4],
                            [1, 5], [4], [1, 4, 1], "1,4", None, [1] * 17, [2, 4], [], [2, 2]]
    compared = 0
    for name, datatype, shape in itertools.product(names, datatypes, shapes):
        want = outcome(lambda: one_by_one(3, name, datatype, shape, seen, 6))  # noqa: B023
        got = outcome(lambda: check_input(3, name, datatype, shape, seen, INPUTS, 6))  # type: ignore[arg-type]  # noqa: B023
        assert got == want, (name, datatype, shape)
        compared += isinstance(want, tuple)
    assert compared >= 1  # some combinations are valid: both paths were compared on acceptance too


def test_a_run_alone_counts_as_a_batch_without_a_wait() -> None:
    alone, batch = Metrics("m", "1"), Metrics("m", "1")
    for rows, seconds in ((1, 0.0004), (3, 0.02)):
        alone.observe_run(rows, seconds)
        batch.observe_batch((0.0,), rows, seconds)
    assert {k: v for k, v in samples(alone).items() if not k[0].endswith("_created")} == \
        {k: v for k, v in samples(batch).items() if not k[0].endswith("_created")}


@pytest.mark.parametrize("count", [1, 64, 65, 500])  # small arrays are checked in Python, larger ones by numpy
@pytest.mark.parametrize(("datatype", "bad", "fragment"), [
    ("FP32", 1e39, "beyond FP32's range"), ("FP16", -7e4, "beyond FP16's range"), ("INT8", 128, r"outside \[-128"),
    ("UINT8", -1, r"outside \[0"), ("INT32", 2.5, "found a fraction"), ("BOOL", 2, "only true, false, 0 and 1"),
])
def test_range_checks_refuse_a_value_wherever_it_is(count: int, datatype: str, bad: float, fragment: str) -> None:
    for at in {0, count - 1}:
        data = [0] * count
        data[at] = bad  # type: ignore[call-overload]
        with pytest.raises(BadRequest, match=fragment):
            data_array(data, DTYPES[datatype], [count], "inputs[0].data", datatype)
    good = data_array([1] * count, DTYPES[datatype], [count], "inputs[0].data", datatype)
    assert good.dtype == DTYPES[datatype] and good.shape == (count,)

