"""Which router a Rollout's `spec.trafficRouting` asks for."""

from __future__ import annotations

from parachute import api
from parachute.routing.gateway_api import GatewayAPIRouter
from parachute.routing.istio import IstioRouter, Subsets
from parachute.routing.nginx import NginxRouter
from parachute.routing.objects import Client
from parachute.routing.replicas import ReplicaRouter
from parachute.routing.router import Release, Router


def router_for(routing: api.TrafficRouting | None, client: Client, release: Release) -> Router:
    """The router of the one backend set (the schema allows at most one); replica ratio when none is."""
    if routing is not None and routing.gateway_api is not None:
        return GatewayAPIRouter(client, release, routing.gateway_api)
    if routing is not None and routing.istio is not None:
        rule = routing.istio.destination_rule
        subsets = Subsets(destination_rule=rule.name) if rule is not None else None
        return IstioRouter(client, release, routing.istio, subsets)
    if routing is not None and routing.nginx is not None:
        return NginxRouter(client, release, routing.nginx)
    return ReplicaRouter()
