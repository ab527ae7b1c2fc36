"""moto's S3 server on an ephemeral loopback port for scripts/test.sh: creates the bucket
`lethe-tests`, prints `host:port` once ready, then serves until killed."""
import threading

import boto3
from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
boto3.client(
    "s3",
    endpoint_url=f"http://{host}:{port}",
    region_name="us-east-1",
    aws_access_key_id="lethe-test",
    aws_secret_access_key="lethe-test",
).create_bucket(Bucket="lethe-tests")
print(f"{host}:{port}", flush=True)
threading.Event().wait()
