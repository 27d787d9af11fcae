"""Session service: handover lifecycle, durable inbox/outbox, delivery workers."""
