"""The notifications dead-letter topic: unreadable input records and given-up deliveries."""

from __future__ import annotations

import json
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from services.notifier.channels.base import Message
from services.notifier.ledger import now_iso

MAX_REASON_BYTES = 1000


def _header(value: object) -> bytes:
    return str(value).encode()[:MAX_REASON_BYTES]


class DeadLetters:
    def __init__(self, producer: AIOKafkaProducer, *, topic: str):
        self.producer = producer
        self.topic = topic

    async def invalid_record(self, record: ConsumerRecord[Any, Any], *, reason: str) -> None:
        """Forward an unreadable record as it was, with why and where it came from."""
        await self.producer.send_and_wait(
            self.topic, value=record.value, key=record.key,
            headers=[("reason", _header(reason)), ("kind", b"invalid-record"),
                     ("source_topic", _header(record.topic)),
                     ("source_partition", _header(record.partition)),
                     ("source_offset", _header(record.offset))],
        )

    async def failed_delivery(self, message: Message, *, reason: str, attempts: int) -> None:
        try:
            event: Any = json.loads(message.event)
        except ValueError:
            event = message.event.decode(errors="replace")
        body = {
            "delivery_id": message.delivery_id, "channel": message.channel,
            "target": message.masked_target, "reason": reason, "attempts": attempts,
            "event_id": message.event_id, "customer_id": message.customer_id,
            "failed_at": now_iso(), "event": event,
        }
        headers = [("reason", _header(reason)), ("kind", b"delivery-failed"),
                   ("channel", _header(message.channel)),
                   ("delivery_id", _header(message.delivery_id))]
        if message.channel == "webhook":  # which subscription failed (and whose)
            body["subscription_id"] = message.subscription_id
            body["tenant"] = message.tenant
            headers.append(("subscription_id", _header(message.subscription_id)))
        await self.producer.send_and_wait(
            self.topic, value=json.dumps(body, ensure_ascii=False).encode(),
            key=message.customer_id.encode(), headers=headers,
        )
