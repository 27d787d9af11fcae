"""ccbridge gateway: the Starlette HTTP edge that turns chatbot calls and Infobip/CCaaS
webhooks into gRPC calls to Session and Connector. ``ccbridge.gateway.app.create_app`` builds
the app; ``python -m ccbridge.gateway`` serves it with uvicorn."""
