"""Header names of dead-letter records: what failed, and where the original record lived."""

from __future__ import annotations

ORIGINAL_TOPIC = "x-original-topic"
ORIGINAL_PARTITION = "x-original-partition"
ORIGINAL_OFFSET = "x-original-offset"
ORIGINAL_TIMESTAMP = "x-original-timestamp"
ERROR_CLASS = "x-error-class"
ERROR_MESSAGE = "x-error-message"
# The consumer (service) that dead-lettered it: a topic read by two services can have two copies.
DEAD_LETTERED_BY = "x-dead-lettered-by"

# Header values are UTF-8 strings (numbers in decimal), so any tool can read them.
ALL: tuple[str, ...] = (
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    ORIGINAL_TIMESTAMP,
    ERROR_CLASS,
    ERROR_MESSAGE,
    DEAD_LETTERED_BY,
)
