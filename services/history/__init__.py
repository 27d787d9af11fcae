"""History service: reads Infobip conversations (Get Messages paging, tags, metadata) and
normalizes them into transcripts; attaches tags and metadata. Stateless (no Redis)."""
