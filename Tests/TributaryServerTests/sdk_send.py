"""Sends every kind of call through the unmodified Segment and RudderStack Python SDKs to a Tributary server.

Usage: sdk_send.py HOST WRITE_KEY COUNT
Prints one JSON object: {"errors": [...]}; exits 1 if an SDK reported an error.
Each SDK sends COUNT rounds of identify, track, page, screen, group and alias, with message ids
"<sdk>-<kind>-<round>", and sends every track twice with the same message id (a retry).
"""
import json
import sys

import rudderstack.analytics as rudder_analytics
import segment.analytics as segment_analytics

host, write_key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
errors = []


def on_error(error, items):
    errors.append(f"{error}")


clients = {
    # Segment's SDK sends plain JSON by default; RudderStack's gzips by default.
    "segment": segment_analytics.Client(write_key, host=host, on_error=on_error, max_retries=3, upload_size=50),
    "rudder": rudder_analytics.Client(write_key, host=host, on_error=on_error, max_retries=3, upload_size=50),
}
for sdk, client in clients.items():
    for i in range(count):
        user = f"{sdk}-user-{i}"
        client.identify(user, {"email": f"{user}@example.com", "plan": "pro"}, message_id=f"{sdk}-identify-{i}")
        for attempt in range(2):
            client.track(user, "Order Completed", {"revenue": 12.5 + i, "currency": "EUR"}, message_id=f"{sdk}-track-{i}")
        client.page(user, "Docs", "Getting started", {"path": "/docs"}, message_id=f"{sdk}-page-{i}")
        client.screen(user, "App", "Settings", {"tab": "profile"}, message_id=f"{sdk}-screen-{i}")
        client.group(user, f"{sdk}-group-{i % 3}", {"name": "Acme"}, message_id=f"{sdk}-group-{i}")
        client.alias(f"{sdk}-anon-{i}", user, message_id=f"{sdk}-alias-{i}")
    client.flush()
    client.join()

print(json.dumps({"errors": errors}))
sys.exit(1 if errors else 0)
