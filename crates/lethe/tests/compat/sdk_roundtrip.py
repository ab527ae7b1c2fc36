"""Sends events through the official Amplitude Python SDK to a lethe server.

Usage: sdk_roundtrip.py SERVER_URL API_KEY. Prints one JSON line per SDK callback.
"""
import json
import sys
import time

from amplitude import Amplitude, BaseEvent, Config, EventOptions, Identify, Revenue

url, api_key = sys.argv[1], sys.argv[2]


done = []


def callback(event, code, message=None):
    done.append(event.event_type)
    print(json.dumps({"event_type": event.event_type, "user_id": event.user_id, "code": code}), flush=True)


client = Amplitude(api_key, Config(server_url=url + "/2/httpapi", flush_queue_size=100,
                                   flush_interval_millis=200, callback=callback))
client.track(BaseEvent(event_type="Song Played", user_id="user-python-1",
                       event_properties={"title": "Blue", "seconds": 215}))
client.identify(Identify().set("plan", "pro").set_once("first_seen", "2024-01-01").add("logins", 2),
                EventOptions(user_id="user-python-1"))
client.track(BaseEvent(event_type="After Identify", user_id="user-python-1", device_id="py-device-1"))
client.group_identify("org", "acme", Identify().set("seats", 12), EventOptions(user_id="user-python-1"))
client.revenue(Revenue(price=4.5, quantity=2, product_id="sku-py"), EventOptions(user_id="user-python-1"))
client.track(BaseEvent(event_type="Grouped", user_id="user-python-1", groups={"org": "acme"}))
# Too short for Amplitude's minimum id length: the server lists it, the SDK drops only it.
client.track(BaseEvent(event_type="Short Id", user_id="abc"))
# The SDK re-queues the good events after the server's 400 and sends them again: wait for
# every callback (bounded), flushing as we go.
deadline = time.time() + 20
while len(done) < 7 and time.time() < deadline:
    client.flush()
    time.sleep(0.2)
client.shutdown()
