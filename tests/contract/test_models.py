"""The Models API through the official ``openai`` SDK: ``GET /v1/models`` relays the upstream's
list and adds each name of the model map; ``GET /v1/models/{model}`` retrieves one of them.

The shapes are OpenAI's (``ListModelsResponse``, ``Model``: ``id``, ``object: "model"``,
``created``, ``owned_by``); an unknown model is a 404 and a failing upstream a 502, both in the
error envelope. The server here has a model map and an API key of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.contract.helpers import assert_envelope, assert_sdk_error, raw_client
from tests.support.server import ServerProcess
from tests.support.upstream import ScriptedUpstream

pytestmark = pytest.mark.root

KEY = "models-key"
UPSTREAM_MODELS = ("gpt-4o-mini", "gpt-4o", "org/llama-3-8b")
# alias -> target: listed upstream, not listed upstream, and an alias that shadows a listed model
MODEL_MAP = {"gpt-5.4": "gpt-4o", "house-model": "not-listed-upstream", "gpt-4o-mini": "gpt-4o"}
UPSTREAM_OWNER = "scripted"  # owned_by of every model the scripted upstream lists
UPSTREAM_CREATED = 1700000000
MISSING_MODEL = "no-such-model"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(models=UPSTREAM_MODELS) as scripted:
        yield scripted


@pytest.fixture(scope="module")
def server(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("models")
    env = {
        "CODEINTERP_UPSTREAM_BASE_URL": upstream.base_url,
        "CODEINTERP_UPSTREAM_API_KEY": "sk-upstream-test",
        "CODEINTERP_MODEL_MAP": ",".join(f"{a}={t}" for a, t in MODEL_MAP.items()),
        "CODEINTERP_API_KEYS": KEY,
        "CODEINTERP_POOL_SIZE": "1",
    }
    with ServerProcess(env, data_dir=data_dir) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess, upstream: ScriptedUpstream) -> Iterator[openai.OpenAI]:
    upstream.reset()
    with server.client(api_key=KEY) as sdk:
        yield sdk
    upstream.check()


def test_list_has_the_upstream_models_and_the_mapped_names(client: openai.OpenAI) -> None:
    """The upstream's models as it lists them, then each mapped name, with no id twice."""
    listed = list(client.models.list())
    ids = [model.id for model in listed]
    assert ids == ["gpt-4o", "org/llama-3-8b", "gpt-5.4", "house-model", "gpt-4o-mini"]
    for model in listed:
        assert model.object == "model"
        assert isinstance(model.created, int)
        assert isinstance(model.owned_by, str) and model.owned_by


def test_list_is_openais_shape_on_the_wire(server: ServerProcess) -> None:
    """``{"object": "list", "data": [...]}`` with the four required fields of each model."""
    with raw_client(server, api_key=KEY) as http:
        response = http.get("/models")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"object", "data"} and body["object"] == "list", body
    for model in body["data"]:
        assert {"id", "object", "created", "owned_by"} <= set(model), model
        assert model["object"] == "model", model


def test_an_upstream_model_is_listed_as_it_comes(client: openai.OpenAI) -> None:
    model = client.models.retrieve("gpt-4o")
    assert (model.id, model.object) == ("gpt-4o", "model")
    assert (model.created, model.owned_by) == (UPSTREAM_CREATED, UPSTREAM_OWNER)


def test_a_mapped_name_is_owned_as_its_target(client: openai.OpenAI) -> None:
    """A mapped name whose target the upstream lists takes the target's owner and date."""
    model = client.models.retrieve("gpt-5.4")
    assert (model.id, model.object) == ("gpt-5.4", "model")
    assert (model.created, model.owned_by) == (UPSTREAM_CREATED, UPSTREAM_OWNER)


def test_a_mapped_name_with_an_unlisted_target_is_ours(client: openai.OpenAI) -> None:
    model = client.models.retrieve("house-model")
    assert (model.id, model.owned_by) == ("house-model", "codeinterp")
    assert isinstance(model.created, int)


def test_a_model_id_with_a_slash_can_be_retrieved(client: openai.OpenAI) -> None:
    """Upstream ids such as ``org/model`` (the SDK sends the slash percent-encoded)."""
    assert client.models.retrieve("org/llama-3-8b").id == "org/llama-3-8b"


def test_an_unknown_model_is_a_404_envelope(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve(MISSING_MODEL)
    error = assert_sdk_error(caught.value, 404)
    assert MISSING_MODEL in error["message"], error


def test_a_target_alone_is_not_a_model(client: openai.OpenAI) -> None:
    """A map target the upstream does not list is no model of ours either: only its alias is."""
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(MODEL_MAP["house-model"])


def test_models_need_a_valid_key(server: ServerProcess) -> None:
    with server.client(api_key="wrong-key") as sdk:
        for call in (lambda: sdk.models.list(), lambda: sdk.models.retrieve("gpt-4o")):
            with pytest.raises(openai.AuthenticationError) as caught:
                call()
            assert_sdk_error(caught.value, 401)
    with raw_client(server, api_key=None) as http:
        assert_envelope(http.get("/models"), 401)


def test_an_upstream_that_fails_is_a_502_envelope(
    server: ServerProcess, upstream: ScriptedUpstream
) -> None:
    """With the upstream down, both calls are a 502 server_error naming the model endpoint;
    once it is back, the list is too."""
    upstream.stop()
    try:
        with server.client(api_key=KEY) as sdk:
            for call in (lambda: sdk.models.list(), lambda: sdk.models.retrieve("gpt-4o")):
                with pytest.raises(openai.InternalServerError) as caught:
                    call()
                error = assert_sdk_error(caught.value, 502, type_="server_error")
                assert error["code"] == "upstream_error", error
                assert "model endpoint" in error["message"], error
    finally:
        upstream.start()
    with server.client(api_key=KEY) as sdk:
        assert "gpt-4o" in [model.id for model in sdk.models.list()]
