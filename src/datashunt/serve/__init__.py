"""The HTTP service (``datashunt serve``): batch classification and an OpenAI-compatible routing
proxy on a fitted model, with API keys, limits, backpressure and Prometheus metrics.

Needs the ``serve`` extra (FastAPI, uvicorn, prometheus-client); imported only by the command.
"""
