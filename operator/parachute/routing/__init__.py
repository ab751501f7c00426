"""Traffic routing: how the share of requests a stage decided becomes true in a backend.

`router` holds the seam (the `Router` protocol, what it is told and what it answers);
`backends.router_for` picks a router from `spec.trafficRouting`. One module per backend:
`replicas` (replica ratio, no router), `gateway_api` (HTTPRoute, Gateway or GAMMA parents),
`istio` (VirtualService) and `nginx` (canary Ingress); `services` makes the stable and canary
Services they send to. Routers talk to the API server through the small `objects.Client`
protocol: `client` is the real one, `fake` an in-memory one with a fake router beside it.
"""
