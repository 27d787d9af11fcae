"""gRPC ConnectorService: dispatches each call to the adapter it names, and turns pushed
webhooks into Session events (answering only after Session stored them)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping

import grpc

from ccbridge.connector.v1 import connector_pb2, connector_pb2_grpc
from ccbridge.services.connector.base import START_POSTS_UNTIL, Adapter, CaseMessages, CaseToOpen
from ccbridge.services.connector.session_client import SessionReporter
from ccbridge.services.runtime.errors import InvalidArgument, NotFound
from ccbridge.services.runtime.tracing import bind_conversation

log = logging.getLogger(__name__)


class ConnectorServicer(connector_pb2_grpc.ConnectorServiceServicer):
    """One servicer for every configured adapter. Adapter errors (FarSideError,
    Unauthenticated, InvalidArgument) propagate to the shared error interceptor."""

    def __init__(self, adapters: Mapping[str, Adapter], reporter: SessionReporter) -> None:
        self.adapters = dict(adapters)
        self.reporter = reporter

    def _adapter(self, name: str) -> Adapter:
        if not name:
            raise InvalidArgument("connector is required")
        adapter = self.adapters.get(name)
        if adapter is None:
            configured = ", ".join(self.adapters) or "none"
            raise InvalidArgument(f"unknown connector {name!r} (configured: {configured})")
        return adapter

    def _case_adapter(self, name: str, external_id: str) -> Adapter:
        """The adapter of a call about one existing case (its id is required)."""
        adapter = self._adapter(name)
        if not external_id:
            raise InvalidArgument("external_id is required")
        return adapter

    async def OpenCase(
        self,
        request: connector_pb2.OpenCaseRequest,
        context: grpc.aio.ServicerContext[
            connector_pb2.OpenCaseRequest, connector_pb2.OpenCaseResponse
        ],
    ) -> connector_pb2.OpenCaseResponse:
        adapter = self._adapter(request.connector)
        if not request.HasField("case") or not request.case.conversation_id:
            raise InvalidArgument("case.conversation_id is required")
        case = request.case
        bind_conversation(case.conversation_id)
        opened = await adapter.open_case(
            CaseToOpen(
                conversation_id=case.conversation_id,
                channel=case.channel,
                end_user=case.end_user,
                queue=case.routing.queue,
                priority=case.routing.priority,
                skills=tuple(case.routing.skills),
                rule=case.routing.rule,
                tags=tuple(case.tags),
                metadata=dict(case.metadata),
                transcript=list(case.transcript),
                transcript_truncated=case.transcript_truncated,
                # A retried open must find the case the first attempt created.
                idempotency_key=request.idempotency_key or case.conversation_id,
            )
        )
        return connector_pb2.OpenCaseResponse(
            external_id=opened.external_id, existing=opened.existing
        )

    async def PostCustomerMessage(
        self,
        request: connector_pb2.PostCustomerMessageRequest,
        context: grpc.aio.ServicerContext[
            connector_pb2.PostCustomerMessageRequest, connector_pb2.PostCustomerMessageResponse
        ],
    ) -> connector_pb2.PostCustomerMessageResponse:
        adapter = self._case_adapter(request.connector, request.external_id)
        if not request.HasField("message"):
            raise InvalidArgument("message is required")
        key = request.idempotency_key or request.message.id
        if not key:
            raise InvalidArgument("idempotency_key (or message.id) is required")
        message_id = await adapter.post_customer_message(
            request.external_id, request.conversation_id, request.message, key
        )
        return connector_pb2.PostCustomerMessageResponse(external_message_id=message_id)

    async def PostCustomerMessages(
        self,
        request: connector_pb2.PostCustomerMessagesRequest,
        context: grpc.aio.ServicerContext[
            connector_pb2.PostCustomerMessagesRequest, connector_pb2.PostCustomerMessagesResponse
        ],
    ) -> connector_pb2.PostCustomerMessagesResponse:
        adapter = self._adapter(request.connector)
        cases: list[CaseMessages] = []
        for index, case in enumerate(request.cases):
            if not case.external_id:
                raise InvalidArgument(f"cases[{index}].external_id is required")
            if not case.messages:
                raise InvalidArgument(f"cases[{index}] has no message")
            for position, message in enumerate(case.messages):
                if not message.id:
                    raise InvalidArgument(
                        f"cases[{index}].messages[{position}].id is required "
                        "(it is the idempotency key)"
                    )
            cases.append(CaseMessages(case.external_id, case.conversation_id, list(case.messages)))
        if len(cases) == 1:
            bind_conversation(cases[0].conversation_id)
        remaining = context.time_remaining()
        if remaining is not None:
            # Half the deadline to start posts, half for the last ones to finish.
            START_POSTS_UNTIL.set(time.monotonic() + remaining / 2)
        deliveries = await adapter.post_customer_messages(cases)
        if len(deliveries) != len(cases):  # an adapter bug; never answer misaligned results
            raise RuntimeError(
                f"connector {request.connector!r} answered {len(deliveries)} results "
                f"for {len(cases)} cases"
            )
        results: list[connector_pb2.CaseDeliveryResult] = []
        failed = 0
        for delivery in deliveries:
            result = connector_pb2.CaseDeliveryResult(
                delivered=delivery.delivered, external_message_ids=delivery.message_ids
            )
            if delivery.error is not None:
                failed += 1
                result.error = str(delivery.error) or type(delivery.error).__name__
                result.retryable = delivery.error.retryable
                result.retry_after_s = delivery.error.retry_after or 0.0
            results.append(result)
        if failed:
            log.info(
                "post customer messages %s: %d cases, %d with a failed message",
                request.connector,
                len(cases),
                failed,
            )
        return connector_pb2.PostCustomerMessagesResponse(results=results)

    async def CloseCase(
        self,
        request: connector_pb2.CloseCaseRequest,
        context: grpc.aio.ServicerContext[
            connector_pb2.CloseCaseRequest, connector_pb2.CloseCaseResponse
        ],
    ) -> connector_pb2.CloseCaseResponse:
        adapter = self._case_adapter(request.connector, request.external_id)
        key = request.idempotency_key or f"{request.conversation_id or request.external_id}:close"
        already = await adapter.close_case(
            request.external_id, request.conversation_id, request.reason, key
        )
        return connector_pb2.CloseCaseResponse(already_closed=already)

    async def ReportMessageFailed(
        self,
        request: connector_pb2.ReportMessageFailedRequest,
        context: grpc.aio.ServicerContext[
            connector_pb2.ReportMessageFailedRequest, connector_pb2.ReportMessageFailedResponse
        ],
    ) -> connector_pb2.ReportMessageFailedResponse:
        adapter = self._case_adapter(request.connector, request.external_id)
        if not request.message_id:
            raise InvalidArgument("message_id is required")
        bind_conversation(request.conversation_id)
        await adapter.report_message_failed(
            request.external_id,
            request.conversation_id,
            request.message_id,
            request.reason,
            request.idempotency_key or f"failed:{request.message_id}",
        )
        return connector_pb2.ReportMessageFailedResponse()

    async def PostTyping(
        self,
        request: connector_pb2.PostTypingRequest,
        context: grpc.aio.ServicerContext[
            connector_pb2.PostTypingRequest, connector_pb2.PostTypingResponse
        ],
    ) -> connector_pb2.PostTypingResponse:
        adapter = self._case_adapter(request.connector, request.external_id)
        bind_conversation(request.conversation_id)
        relayed = await adapter.post_typing(
            request.external_id, request.conversation_id, request.typing
        )
        return connector_pb2.PostTypingResponse(relayed=relayed)

    async def HandleWebhook(
        self,
        request: connector_pb2.HandleWebhookRequest,
        context: grpc.aio.ServicerContext[
            connector_pb2.HandleWebhookRequest, connector_pb2.HandleWebhookResponse
        ],
    ) -> connector_pb2.HandleWebhookResponse:
        # The name comes from the URL path (/webhooks/ccaas/{connector}): unknown → 404.
        if request.connector and request.connector not in self.adapters:
            raise NotFound(f"unknown connector {request.connector!r}")
        adapter = self._adapter(request.connector)
        headers: dict[str, str] = {}
        for header in request.headers:
            headers.setdefault(header.name.lower(), header.value)
        batch = adapter.parse_webhook_batch(headers, request.body)
        if not batch.events:
            return connector_pb2.HandleWebhookResponse(ignored=batch.ignored)
        response = await self.reporter.report(request.connector, batch.events)
        log.info(
            "webhook %s: %d events (accepted %d, duplicates %d, ignored %d)",
            request.connector,
            len(batch.events),
            response.accepted,
            response.duplicates,
            response.ignored + batch.ignored,
        )
        return connector_pb2.HandleWebhookResponse(
            accepted=response.accepted,
            duplicates=response.duplicates,
            ignored=response.ignored + batch.ignored,
        )

    async def FetchAgentFile(
        self,
        request: connector_pb2.FetchAgentFileRequest,
        context: grpc.aio.ServicerContext[
            connector_pb2.FetchAgentFileRequest, connector_pb2.FetchAgentFileResponse
        ],
    ) -> AsyncIterator[connector_pb2.FetchAgentFileResponse]:
        adapter = self._adapter(request.connector)
        if not request.file_ref:
            raise InvalidArgument("file_ref is required")
        async with adapter.agent_file(request.file_ref) as found:
            yield connector_pb2.FetchAgentFileResponse(
                head=connector_pb2.AgentFileHead(
                    content_type=found.content_type,
                    content_length=found.content_length or 0,
                    file_name=found.name,
                )
            )
            async for chunk in found.chunks:
                yield connector_pb2.FetchAgentFileResponse(chunk=chunk)

    async def ListConnectors(
        self,
        request: connector_pb2.ListConnectorsRequest,
        context: grpc.aio.ServicerContext[
            connector_pb2.ListConnectorsRequest, connector_pb2.ListConnectorsResponse
        ],
    ) -> connector_pb2.ListConnectorsResponse:
        return connector_pb2.ListConnectorsResponse(
            connectors=[
                connector_pb2.ConnectorInfo(name=name, mode=adapter.mode)
                for name, adapter in self.adapters.items()
            ]
        )
