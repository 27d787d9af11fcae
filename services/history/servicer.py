"""The HistoryService servicer: GetTranscript and AnnotateConversation over Infobip.

Errors: bad requests raise InvalidArgument; Infobip failures propagate as
:class:`~ccbridge.services.infobip.client.InfobipError` (a FarSideError), which the shared
interceptor maps — InfobipNotFound → NOT_FOUND, retryable (5xx, 429, timeouts) →
UNAVAILABLE with the Retry-After in trailing metadata, other refusals →
FAILED_PRECONDITION.
"""

from __future__ import annotations

import asyncio
import logging
import re

import grpc

from ccbridge.history.v1 import history_pb2, history_pb2_grpc
from ccbridge.services.history.settings import MAX_HISTORY_LIMIT
from ccbridge.services.history.transcript import TranscriptBuilder, page_size
from ccbridge.services.infobip.client import InfobipClient
from ccbridge.services.runtime.errors import InvalidArgument
from ccbridge.services.runtime.ids import CONVERSATION_ID_RULE, is_conversation_id

log = logging.getLogger(__name__)

TAG_NAME = re.compile(r"^[A-Za-z0-9._]{1,100}$")
_MAX_METADATA_KEY = 255
# Extra pages allowed beyond the plan, for messages arriving while we page (they shift
# the offsets, so a page may bring fewer new ids than its size).
_SLACK_PAGES = 2


class HistoryServicer(history_pb2_grpc.HistoryServiceServicer):
    """Reads and annotates Infobip conversations with one shared :class:`InfobipClient`."""

    def __init__(self, client: InfobipClient, *, default_limit: int) -> None:
        self._client = client
        self._default_limit = default_limit

    async def GetTranscript(
        self,
        request: history_pb2.GetTranscriptRequest,
        context: grpc.aio.ServicerContext[
            history_pb2.GetTranscriptRequest, history_pb2.GetTranscriptResponse
        ],
    ) -> history_pb2.GetTranscriptResponse:
        cid = request.conversation_id.strip()
        if not is_conversation_id(cid):
            raise InvalidArgument(f"conversation_id must be {CONVERSATION_ID_RULE}")
        if request.limit < 0 or request.limit > MAX_HISTORY_LIMIT:
            raise InvalidArgument(f"limit must be between 0 and {MAX_HISTORY_LIMIT}")
        cap = request.limit or self._default_limit
        # Tags and metadata are read while the messages are paged (they never raise);
        # a failure of the messages cancels them and propagates unchanged.
        tags_task = asyncio.create_task(self._tags(cid))
        metadata_task = asyncio.create_task(self._metadata(cid))
        try:
            builder, more = await self._page_messages(cid, cap)
            tags, metadata = await asyncio.gather(tags_task, metadata_task)
        except BaseException:
            tags_task.cancel()
            metadata_task.cancel()
            await asyncio.gather(tags_task, metadata_task, return_exceptions=True)
            raise
        transcript = builder.build(more_available=more, tags=tags, metadata=metadata)
        log.info(
            "transcript of %d messages (%d in total, %d pages, truncated=%s)",
            len(transcript.messages),
            transcript.total_messages,
            transcript.pages_fetched,
            transcript.truncated,
        )
        return history_pb2.GetTranscriptResponse(transcript=transcript)

    async def _page_messages(self, cid: str, cap: int) -> tuple[TranscriptBuilder, bool]:
        """Pages Get Messages newest first until ``cap`` unique messages or the end.

        Returns the builder and whether Infobip has older messages left.
        """
        size = page_size(cap)
        max_pages = -(-cap // size) + _SLACK_PAGES
        builder = TranscriptBuilder(cid, cap)
        more = False
        for page in range(max_pages):
            body = await self._client.get_messages(
                cid, page=page, limit=size, order_by="createdAt:desc"
            )
            count, fresh = builder.add_page(body)
            total = builder.total_items
            more = count >= size and (total is None or (page + 1) * size < total)
            if not more or builder.unique >= cap:
                break
            if fresh == 0:
                # A far side that ignores `page` would loop forever.
                log.warning("Get Messages page %d brought no new messages; stopping", page)
                break
        return builder, more

    async def _tags(self, cid: str) -> list[str]:
        try:
            return await self._client.get_tags(cid)
        except Exception as exc:  # a transcript without tags beats no transcript
            log.warning(
                "reading tags failed (%s: %s); transcript without tags", type(exc).__name__, exc
            )
            return []

    async def _metadata(self, cid: str) -> dict[str, str]:
        try:
            return await self._client.get_metadata(cid)
        except Exception as exc:  # a transcript without metadata beats no transcript
            log.warning(
                "reading metadata failed (%s: %s); transcript without metadata",
                type(exc).__name__,
                exc,
            )
            return {}

    async def AnnotateConversation(
        self,
        request: history_pb2.AnnotateConversationRequest,
        context: grpc.aio.ServicerContext[
            history_pb2.AnnotateConversationRequest, history_pb2.AnnotateConversationResponse
        ],
    ) -> history_pb2.AnnotateConversationResponse:
        cid = request.conversation_id.strip()
        if not is_conversation_id(cid):
            raise InvalidArgument(f"conversation_id must be {CONVERSATION_ID_RULE}")
        bad = [tag for tag in request.tags if not TAG_NAME.match(tag)]
        if bad:
            raise InvalidArgument(
                f"invalid tag names {bad[:5]!r}: use 1-100 characters of [A-Za-z0-9._]"
            )
        bad_keys = [
            key for key in request.metadata if not key.strip() or len(key) > _MAX_METADATA_KEY
        ]
        if bad_keys:
            raise InvalidArgument("metadata keys must be 1-255 characters and not blank")
        tags = list(dict.fromkeys(request.tags))  # dedupe, keep order
        for tag in tags:
            await self._client.create_tag(tag)
            await self._client.add_tag(cid, tag)
        merged = False
        if request.metadata:
            await self._client.patch_metadata(cid, dict(request.metadata))
            merged = True
        log.info("annotated conversation: %d tags, metadata merged=%s", len(tags), merged)
        return history_pb2.AnnotateConversationResponse(tags_added=tags, metadata_merged=merged)
