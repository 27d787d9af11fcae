"""The gateway's OpenAPI 3.1 document, written by hand (the routes are few and their
contracts are the product: a generated document would describe Starlette, not ccbridge).

``openapi_document()`` returns a fresh dict; the app serves it at ``/openapi.json`` and
a test checks that every route of the app is described.
"""

from __future__ import annotations

from typing import Any

from ccbridge.services.runtime.handover_limits import MAX_METADATA_KEYS, MAX_TAG_CHARS, MAX_TAGS
from ccbridge.services.runtime.ids import CONVERSATION_ID_PATTERN
from ccbridge.services.runtime.media import MAX_TOKEN_CHARS, MEDIA_TOKEN_PATTERN

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {_JSON: {"schema": _ref("Error")}},
    }
    if retry_after:
        response["headers"] = {
            "Retry-After": {
                "schema": {"type": "integer"},
                "description": "Seconds to wait before retrying.",
            }
        }
    return response


def _json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"required": True, "description": description, "content": {_JSON: {"schema": schema}}}


def _ok(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


_COMMON_ERRORS: dict[str, Any] = {
    "400": _error("Malformed JSON or a field that fails validation."),
    "413": _error("Body larger than CCBRIDGE_MAX_BODY_BYTES."),
    "415": _error("Content-Type is not application/json."),
}

_WEBHOOK_BACKEND_ERRORS: dict[str, Any] = {
    "503": _error(
        "Session is unavailable or timed out: nothing was stored, retry.", retry_after=True
    ),
    "500": _error("Unexpected error: nothing is guaranteed stored, retry."),
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "type": "string",
                        "description": "Stable snake_case error code.",
                        "examples": ["unauthorized", "invalid_json", "payload_too_large"],
                    },
                    "message": {"type": "string", "description": "Human-readable explanation."},
                },
            }
        },
    },
    "EscalationRequest": {
        "type": "object",
        "required": ["conversationId"],
        "properties": {
            "conversationId": {
                "type": "string",
                "pattern": CONVERSATION_ID_PATTERN,
                "description": "Infobip conversation id.",
            },
            "tags": {
                "type": "array",
                "maxItems": MAX_TAGS,
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_TAG_CHARS},
                "description": "Tags to attach and to route by.",
            },
            "metadata": {
                "type": "object",
                "maxProperties": MAX_METADATA_KEYS,
                "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
                "description": "Context for routing and the case. Numbers and booleans are "
                "converted to strings, null values dropped, nested values "
                "refused.",
            },
        },
    },
    "EscalationResponse": {
        "type": "object",
        "required": ["conversationId", "state", "created"],
        "properties": {
            "conversationId": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["OPENING", "ACTIVE", "CLOSING", "CLOSED", "FAILED", "REJECTED"],
            },
            "created": {
                "type": "boolean",
                "description": "False when the handover existed already.",
            },
        },
    },
    "Handover": {
        "type": "object",
        "properties": {
            "conversationId": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["OPENING", "ACTIVE", "CLOSING", "CLOSED", "FAILED", "REJECTED"],
            },
            "connector": {"type": "string"},
            "externalId": {"type": "string"},
            "routing": {
                "type": ["object", "null"],
                "properties": {
                    "connector": {"type": "string"},
                    "queue": {"type": "string"},
                    "priority": {"type": "integer"},
                    "skills": {"type": "array", "items": {"type": "string"}},
                    "rule": {"type": "string"},
                },
            },
            "channel": {"type": "string"},
            "endUser": {"type": "string"},
            "businessSender": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "createdAt": {"type": ["string", "null"], "format": "date-time"},
            "updatedAt": {"type": ["string", "null"], "format": "date-time"},
            "version": {"type": "integer"},
            "failureReason": {"type": "string"},
            "inboxPending": {"type": "integer"},
            "outboxPending": {"type": "integer"},
            "deadLetters": {"type": "integer"},
            "closedBy": {
                "type": ["string", "null"],
                "enum": ["CCAAS", "INFOBIP", "OPERATOR", None],
            },
        },
    },
    "InfobipMessage": {
        "type": "object",
        "description": "A message as Infobip Get Messages returns it. Unknown fields are "
        "ignored; OUTBOUND messages are skipped.",
        "required": ["id", "conversationId"],
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string"},
            "conversationId": {"type": "string"},
            "channel": {"type": "string"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "direction": {"type": "string", "enum": ["INBOUND", "OUTBOUND"]},
            "authorType": {"type": "string"},
            "createdAt": {
                "type": "string",
                "description": "ISO 8601; +00:00, +0000 or Z; missing means now.",
            },
            "contentType": {"type": "string"},
            "content": {"type": "object"},
        },
    },
    "InfobipLegacyBody": {
        "oneOf": [
            _ref("InfobipMessage"),
            {"type": "array", "items": _ref("InfobipMessage")},
            {
                "type": "object",
                "properties": {"messages": {"type": "array", "items": _ref("InfobipMessage")}},
            },
            {
                "type": "object",
                "properties": {"results": {"type": "array", "items": _ref("InfobipMessage")}},
            },
        ],
    },
    "InfobipEvent": {
        "type": "object",
        "required": ["type", "timestamp"],
        "additionalProperties": True,
        "properties": {
            "type": {
                "type": "string",
                "examples": ["INBOUND_MESSAGE", "CONVERSATION_STATUS_UPDATED"],
            },
            "timestamp": {
                "type": "string",
                "description": "When the event happened (required, as in Infobip's schema). "
                "Events older than CCBRIDGE_INFOBIP_EVENT_MAX_AGE_S are refused "
                "(counted in `rejected`).",
                "examples": ["2025-10-31T13:47:40.032+00:00"],
            },
            "payload": {
                "type": "object",
                "description": "INBOUND_MESSAGE: the conversation "
                "(id = conversation id) with `message`; CONVERSATION_STATUS_UPDATED: "
                "the conversation with `status`.",
            },
        },
    },
    "IngestCounts": {
        "type": "object",
        "required": ["accepted", "duplicates", "ignored"],
        "properties": {
            "accepted": {"type": "integer", "description": "Stored durably for the agent."},
            "duplicates": {"type": "integer", "description": "Already stored before."},
            "ignored": {
                "type": "integer",
                "description": "Not relayed: no open handover, outbound, or an "
                "event type ccbridge does not act on.",
            },
            "closed": {
                "type": "integer",
                "description": "(events only) handovers closed by this request.",
            },
            "rejected": {
                "type": "integer",
                "description": "(events only) events refused: older than "
                "CCBRIDGE_INFOBIP_EVENT_MAX_AGE_S, or a CLOSED older than the handover.",
            },
        },
    },
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every gateway route."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ccbridge gateway",
            "version": "1.0.0",
            "description": "HTTP edge of ccbridge: chatbot escalations, Infobip and CCaaS "
            "webhooks, probes and metrics. Every error answers "
            '{"error": {"code", "message"}}. Requests may carry '
            "X-Request-Id; every answer echoes it.",
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "escalationBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "CCBRIDGE_ESCALATION_TOKEN.",
                },
                "infobipHmac": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Hub-Signature-256",
                    "description": "HMAC of the raw body with INFOBIP_WEBHOOK_SECRET, in "
                    "the header INFOBIP_WEBHOOK_HMAC_HEADER (default X-Hub-Signature-256), "
                    "algorithm INFOBIP_WEBHOOK_HMAC_ALGORITHM (default HMAC_SHA_256), "
                    "encoding INFOBIP_WEBHOOK_HMAC_ENCODING (default hex), optional "
                    "`sha256=` prefix. Header and encoding are unconfirmed for Infobip.",
                },
                "infobipBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "INFOBIP_WEBHOOK_BASIC_USER / INFOBIP_WEBHOOK_BASIC_PASSWORD.",
                },
            },
        },
        "paths": {
            "/v1/escalations": {
                "post": {
                    "operationId": "escalate",
                    "summary": "Hand a conversation to a human agent (chatbot API element).",
                    "security": [{"escalationBearer": []}],
                    "requestBody": _json_body(_ref("EscalationRequest"), "The conversation."),
                    "responses": {
                        "202": _ok(
                            _ref("EscalationResponse"),
                            "Handover created or already existing; opening runs in the background.",
                        ),
                        "401": _error("Missing or wrong bearer token."),
                        **_COMMON_ERRORS,
                        "503": _error("Session unavailable; retry.", retry_after=True),
                        "504": _error("Session timed out; retry.", retry_after=True),
                    },
                }
            },
            "/v1/handovers/{conversationId}": {
                "get": {
                    "operationId": "getHandover",
                    "summary": "The handover of a conversation.",
                    "security": [{"escalationBearer": []}],
                    "parameters": [
                        {
                            "name": "conversationId",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": CONVERSATION_ID_PATTERN},
                        }
                    ],
                    "responses": {
                        "200": _ok(_ref("Handover"), "The handover."),
                        "400": _error("Malformed conversation id."),
                        "401": _error("Missing or wrong bearer token."),
                        "404": _error("No handover for this conversation."),
                        "503": _error("Session unavailable; retry.", retry_after=True),
                    },
                }
            },
            "/webhooks/infobip/{token}": {
                "post": {
                    "operationId": "infobipLegacyWebhook",
                    "summary": "Infobip account-configuration webhook (every inbound message).",
                    "description": "Infobip sends no credentials: the path token must equal "
                    "CCBRIDGE_WEBHOOK_TOKEN (401 otherwise); "
                    "CCBRIDGE_INFOBIP_ALLOWED_IPS restricts callers (403). "
                    "Answers 200 only after Session stored the messages.",
                    "security": [],
                    "parameters": [
                        {
                            "name": "token",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 16},
                        }
                    ],
                    "requestBody": _json_body(
                        _ref("InfobipLegacyBody"),
                        "One message, an array, or {messages|results: [...]}.",
                    ),
                    "responses": {
                        "200": _ok(_ref("IngestCounts"), "Stored (or ignored) durably."),
                        "401": _error("Wrong path token."),
                        "403": _error("Caller address not in the allow-list."),
                        **_COMMON_ERRORS,
                        **_WEBHOOK_BACKEND_ERRORS,
                    },
                }
            },
            "/webhooks/infobip/events": {
                "post": {
                    "operationId": "infobipEventsWebhook",
                    "summary": "Infobip Subscriptions (Conversations webhook) events.",
                    "description": "INBOUND_MESSAGE → ingest; CONVERSATION_STATUS_UPDATED with "
                    "status CLOSED → close the handover (the case is closed); other "
                    "types are ignored. Refuses every request (401 "
                    "webhook_auth_not_configured) unless HMAC or Basic "
                    "credentials are configured.",
                    "security": [{"infobipHmac": []}, {"infobipBasic": []}],
                    "requestBody": _json_body(
                        {
                            "oneOf": [
                                _ref("InfobipEvent"),
                                {"type": "array", "items": _ref("InfobipEvent")},
                            ]
                        },
                        "One event or an array of events.",
                    ),
                    "responses": {
                        "200": _ok(_ref("IngestCounts"), "Handled."),
                        "401": _error(
                            "Bad or missing signature/credentials, or no authentication configured."
                        ),
                        **_COMMON_ERRORS,
                        **_WEBHOOK_BACKEND_ERRORS,
                    },
                }
            },
            "/webhooks/ccaas/{connector}": {
                "post": {
                    "operationId": "ccaasWebhook",
                    "summary": "Events a CCaaS pushes (agent messages, typing, case closed).",
                    "description": "Headers (lower-cased) and the raw body go to the connector, "
                    "which verifies and parses them; any content type.",
                    "security": [],
                    "parameters": [
                        {
                            "name": "connector",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                        }
                    ],
                    "requestBody": {"required": False, "content": {"*/*": {"schema": {}}}},
                    "responses": {
                        "200": _ok(
                            {
                                "type": "object",
                                "properties": {
                                    "accepted": {"type": "integer"},
                                    "duplicates": {"type": "integer"},
                                    "ignored": {"type": "integer"},
                                },
                            },
                            "Events stored durably.",
                        ),
                        "400": _error("The connector could not parse the body."),
                        "401": _error("The connector's verification failed."),
                        "404": _error("No such connector."),
                        "413": _error("Body larger than CCBRIDGE_MAX_BODY_BYTES."),
                        **_WEBHOOK_BACKEND_ERRORS,
                    },
                }
            },
            "/media/{token}": {
                "get": {
                    "operationId": "media",
                    "summary": "A media file: an end user's from Infobip, or an agent's "
                    "from the CCaaS.",
                    "description": "The link Session put in a message's content when "
                    "CCBRIDGE_MEDIA_PROXY is on: the token (signed with CCBRIDGE_MEDIA_SECRET, "
                    "valid CCBRIDGE_MEDIA_URL_TTL_S) is the credential. The file is fetched "
                    "from Infobip with the API key and streamed as it comes; Content-Type, "
                    "Content-Length and Content-Disposition are Infobip's. A file without a "
                    "length that grows beyond CCBRIDGE_MEDIA_MAX_BYTES is cut off. A link the "
                    "connector service signed (a file an agent attached in RT) is streamed from "
                    "the connector service, which reads it with the CCaaS's credentials.",
                    "security": [],
                    "parameters": [
                        {
                            "name": "token",
                            "in": "path",
                            "required": True,
                            "schema": {
                                "type": "string",
                                "pattern": MEDIA_TOKEN_PATTERN,
                                "maxLength": MAX_TOKEN_CHARS,
                            },
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The file.",
                            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                        },
                        "403": _error("Forged or malformed link."),
                        "404": _error(
                            "Expired link, the media proxy off, or no such file at Infobip "
                            "or the CCaaS."
                        ),
                        "413": _error("The file is larger than CCBRIDGE_MEDIA_MAX_BYTES."),
                        "502": _error(
                            "Infobip, the CCaaS or the connector service failed or could not "
                            "be reached."
                        ),
                        "503": _error(
                            "CCBRIDGE_MEDIA_MAX_STREAMS downloads in progress; retry.",
                            retry_after=True,
                        ),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness.",
                    "security": [],
                    "responses": {"200": _ok({"type": "object"}, "The process answers.")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness.",
                    "security": [],
                    "description": "200 when Session and Connector answer gRPC health SERVING "
                    "(cached about 1 s); 503 otherwise and while shutting down.",
                    "responses": {
                        "200": _ok({"type": "object"}, "Ready."),
                        "503": _error("Not ready."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics.",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "security": [],
                    "responses": {"200": _ok({"type": "object"}, "OpenAPI 3.1 document.")},
                }
            },
        },
    }
