"""protocols/: one table, read by the client (which codec) and the server (which routes)."""

import pytest

from rewardbridge.options import PROTOCOLS, RewardOptions
from rewardbridge.protocols import MODULES, all_routes, protocol_module
from rewardbridge.protocols.base import Route


@pytest.mark.parametrize("protocol", list(MODULES))
def test_each_protocol_module_has_a_client_and_routes(protocol):
    module = protocol_module(protocol)
    assert module.CLIENT.protocol == protocol
    assert isinstance(module.CLIENT.renders_here, bool) and module.CLIENT.summary
    if getattr(module.CLIENT, "scorer", None):  # a generative judge (genrm, principle): client only, the judge is an LLM server
        assert module.ROUTES == ()
    else:
        assert module.ROUTES and all(isinstance(route, Route) for route in module.ROUTES)


def test_the_option_choices_are_the_table():
    assert PROTOCOLS == tuple(MODULES)
    with pytest.raises(ValueError, match="protocol='grpc' is not one of"):
        RewardOptions(protocol="grpc")


def test_the_server_registers_every_route_of_the_table():
    from rewardbridge.server import ServerSettings, create_app

    app = create_app(lambda: None, ServerSettings(api_key_env="UNSET_KEY_VAR_FOR_TEST"))
    served = {(method, route.path) for route in app.routes for method in getattr(route, "methods", ())}
    wanted = {(route.method, route.path) for route in all_routes()}
    assert wanted <= served and len(wanted) == len(all_routes())  # no two routes on one method and path
    assert {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics")} <= served
