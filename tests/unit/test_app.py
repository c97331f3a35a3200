"""`App`, `Task` and `load_app`: registration, payload models, decode/encode, task options."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, Field

from streamproc import App, Task, TaskContext
from streamproc.errors import PoisonRecord, StreamprocError
from streamproc.loading import load_app
from streamproc.ratelimit import RateLimit


class Greet(BaseModel):
    name: str
    times: int = Field(default=1, ge=1)


def make_app() -> tuple[App, Task[Any, Any], Task[Any, Any]]:
    app = App()

    @app.task("greet")
    async def greet(payload: Greet, ctx: TaskContext) -> None:
        pass

    @app.task()
    def raw(payload: dict[str, Any]) -> None:
        pass

    return app, greet, raw


def test_payload_model_comes_from_the_annotation() -> None:
    app, greet, raw = make_app()
    assert app.tasks == {"greet": greet, "raw": raw}
    assert greet.model is Greet
    assert greet.is_async and not raw.is_async


def test_dict_payloads_have_no_model_and_the_name_defaults_to_the_function() -> None:
    _, _, raw = make_app()
    assert raw.name == "raw"
    assert raw.model is None
    assert raw.decode(b'{"a": [1, 2]}') == {"a": [1, 2]}


def test_bare_dict_annotation_and_no_annotation_mean_dict() -> None:
    app = App()

    @app.task()
    def bare(payload: dict) -> None:  # type: ignore[type-arg]
        pass

    @app.task()
    def untyped(payload):  # type: ignore[no-untyped-def]
        pass

    assert bare.model is None and untyped.model is None


def test_ctx_is_detected_by_a_second_parameter() -> None:
    _, greet, raw = make_app()
    assert greet.wants_context
    assert not raw.wants_context


def test_a_handler_with_three_parameters_or_a_bad_annotation_is_refused() -> None:
    app = App()
    with pytest.raises(StreamprocError, match="takes"):

        @app.task()
        def three(payload: dict[str, Any], ctx: TaskContext, extra: int) -> None:
            pass

    with pytest.raises(StreamprocError, match="pydantic model or dict"):

        @app.task()
        def number(payload: int) -> None:
            pass


def test_decode_validates_against_the_model() -> None:
    _, greet, _ = make_app()
    payload = greet.decode(b'{"name": "ada", "times": 2}')
    assert payload == Greet(name="ada", times=2)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "undecodable"),
        (b'{"name": ', "undecodable"),
        (None, "undecodable"),
        (b'{"times": 3}', "invalid_payload"),
        (b'{"name": "ada", "times": 0}', "invalid_payload"),
        (b"[1, 2]", "invalid_payload"),
    ],
)
def test_decode_poison_reasons_with_a_model(value: bytes | None, reason: str) -> None:
    _, greet, _ = make_app()
    with pytest.raises(PoisonRecord) as caught:
        greet.decode(value)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "undecodable"),
        (b"\xff\xfe", "undecodable"),
        (None, "undecodable"),
        (b"[1, 2]", "invalid_payload"),
        (b'"a string"', "invalid_payload"),
    ],
)
def test_decode_poison_reasons_with_a_dict(value: bytes | None, reason: str) -> None:
    _, _, raw = make_app()
    with pytest.raises(PoisonRecord) as caught:
        raw.decode(value)
    assert caught.value.reason == reason


def test_schema_mismatch_names_the_field() -> None:
    _, greet, _ = make_app()
    with pytest.raises(PoisonRecord, match="name"):
        greet.decode(b'{"times": 3}')


def test_encode_validates_and_names_the_field() -> None:
    _, greet, _ = make_app()
    assert json.loads(greet.encode({"name": "ada"})) == {"name": "ada", "times": 1}
    assert json.loads(greet.encode(Greet(name="bo", times=3))) == {"name": "bo", "times": 3}
    with pytest.raises(StreamprocError, match=r"invalid payload for task 'greet': times: .*greater than or equal"):
        greet.encode({"name": "ada", "times": 0})
    with pytest.raises(StreamprocError, match="name: Field required"):
        greet.encode({})


def test_encode_of_a_dict_task_is_plain_json() -> None:
    _, _, raw = make_app()
    assert json.loads(raw.encode({"a": 1})) == {"a": 1}


def test_a_task_is_still_callable_like_its_function() -> None:
    app = App()

    @app.task()
    def double(payload: dict[str, int]) -> int:
        return payload["n"] * 2

    assert double({"n": 21}) == 42
    assert repr(double) == "Task('double')"


def test_registering_a_name_twice_fails() -> None:
    app = App()

    @app.task("same")
    def first(payload: dict[str, Any]) -> None:
        pass

    with pytest.raises(StreamprocError, match="'same' is registered twice"):

        @app.task("same")
        def second(payload: dict[str, Any]) -> None:
            pass


def test_task_options_are_kept() -> None:
    app = App()

    @app.task("limited", timeout=30, max_retries=3, rate_limit="50/s")
    async def limited(payload: dict[str, Any]) -> None:
        pass

    assert limited.timeout == 30
    assert limited.max_retries == 3
    assert limited.rate_limit == RateLimit(50.0)


@pytest.mark.parametrize(
    ("options", "problem"),
    [({"max_retries": -1}, "max_retries"), ({"failure_threshold": 0}, "failure_threshold")],
)
def test_task_options_out_of_range_are_refused(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(StreamprocError, match=problem):
        App().task("t", **options)(lambda payload: None)


def test_load_app_finds_the_example_app() -> None:
    app = load_app("handlers.app:app")
    assert {"send_email", "generate_report", "process_document", "process_order", "noop"} <= set(app.tasks)
    assert app.tasks["generate_report"].is_async is False


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("handlers.app", "expected MODULE:ATTR"),
        (":app", "expected MODULE:ATTR"),
        ("handlers.app:", "expected MODULE:ATTR"),
        ("handlers.nosuch:app", "no module named 'handlers.nosuch'"),
        ("handlers.app:nosuch", "has no attribute 'nosuch'"),
        ("handlers.app:main", "is a function, not a streamproc App"),
    ],
)
def test_load_app_errors_are_one_clear_line(spec: str, message: str) -> None:
    with pytest.raises(StreamprocError, match=message) as caught:
        load_app(spec)
    assert "\n" not in str(caught.value)
