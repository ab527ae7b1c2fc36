"""Sends events through the official Amplitude Python SDK to one node of a lethe cluster.

Usage: cluster_ingest.py SERVER_URL API_KEY TAG N. Sends N events, alternately `Keep` (event
property `marker`: `keep-marker-TAG`) and `Purge` (`purge-marker-TAG`), insert_id `TAG-i`,
in small batches over a few seconds. Prints one JSON line per SDK callback: the insert_id and
the status the server answered (the SDK retries 5xx answers on its own).
"""
import json
import sys
import threading
import time

from amplitude import Amplitude, BaseEvent, Config

url, api_key, tag, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
done = []
# The SDK calls back from several threads: one line at a time.
printing = threading.Lock()


def callback(event, code, message=None):
    with printing:
        done.append(event.insert_id)
        sys.stdout.write(json.dumps({"insert_id": event.insert_id, "code": code}) + "\n")
        sys.stdout.flush()


client = Amplitude(api_key, Config(server_url=url + "/2/httpapi", flush_queue_size=10,
                                   flush_interval_millis=50, flush_max_retries=12,
                                   callback=callback))
for i in range(n):
    kind = "Purge" if i % 2 else "Keep"
    client.track(BaseEvent(event_type=kind, user_id=f"user-{tag}-{i % 7}",
                           insert_id=f"{tag}-{i}",
                           event_properties={"marker": f"{kind.lower()}-marker-{tag}", "n": i}))
    if i % 10 == 9:
        time.sleep(0.05)
deadline = time.time() + 40
while len(done) < n and time.time() < deadline:
    client.flush()
    time.sleep(0.2)
client.shutdown()
