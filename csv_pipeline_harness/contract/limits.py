"""The data contract's limits: the numbers any implementation must respect.

They come from DynamoDB (item and attribute-name sizes) and from the contract
itself (the key columns, how many rejections the manifest lists, the room the
manifest keeps for its own fields). The strategies and the oracle take them
from here, never from the ``csv_pipeline`` package, so the contract's tests
judge any Lambda; ``tests/test_contract_limits.py`` checks that this
package's Lambda uses the same numbers.
"""

from __future__ import annotations

#: Column names the table's key attributes take; a header may not use them.
RESERVED_NAMES = ("source", "row")

#: DynamoDB's item limit (400 KB): a record whose item would exceed it is
#: rejected with ``ITEM_TOO_LARGE``; a header the manifest cannot hold fails
#: the file with ``HEADER_TOO_LARGE``.
ITEM_LIMIT_BYTES = 400 * 1024

#: DynamoDB's limit on an attribute name, in bytes of UTF-8: a longer column
#: name fails the file with ``COLUMN_NAME_TOO_LONG``.
ATTRIBUTE_NAME_LIMIT_BYTES = 65_535

#: The manifest item stores the header as a list of names and keeps this much
#: room for its other fields.
MANIFEST_OTHER_FIELDS_BYTES = 10 * 1024

#: A header line longer than this fails with ``HEADER_TOO_LARGE`` without
#: being read whole: no header whose names fit the manifest is that long (every
#: name quoted, every character a doubled quote, commas and CRLF make at most
#: 5/2 bytes of text per byte of the manifest's list).
HEADER_LINE_LIMIT_BYTES = 5 * (ITEM_LIMIT_BYTES - MANIFEST_OTHER_FIELDS_BYTES) // 2 + 16

#: How many rejections the manifest lists; its count is always exact.
LISTED_REJECTIONS = 100
