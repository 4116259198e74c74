"""The studio over HTTP (`python serve.py`): AUTOMATIC1111's `/sdapi/v1`, OpenAI's Images API under
`/v1`, and the series' own endpoints under `/studio/v1`, on FastAPI and uvicorn.

One process opens the studio once (`state.ServerState`): every image any client asks for goes
through the one image service and render worker, so concurrent requests are batched, cached and
stored in the catalog like the dashboard's. `auth` guards every endpoint (HTTP Basic or a Bearer
key, compared in constant time) and caps request bodies; `app.create_app` wires the routers and
turns errors into each API's own error shape.

Layer 8, beside `studio.ui`: it may import `studio.api` and everything below; only `studio.cli`
(the `serve` command) imports it.
"""
