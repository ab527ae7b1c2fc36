"""The live segment files of a lethe deployment, found as an outside reader finds them: the
newest published manifest of each project (`manifests/<project>/<version>.json` beside the
segments) names them.

Where the segments are comes from the deployment's variables, as for `lethe serve`: the data
dir's `segments/` by default, or `LETHE_SEGMENTS=s3://bucket/prefix` with `AWS_ENDPOINT` (the
manifests and the files they name are then downloaded into a temp dir, removed when the
process exits: DuckDB reads S3 through an extension it downloads from the internet, which
the tests do not have).
"""
import atexit
import json
import os
import shutil
import tempfile


def _newest(manifests):
    """The newest manifest of each project, from (project, version, load) triples."""
    newest = {}
    for project, version, load in manifests:
        if project not in newest or version > newest[project][0]:
            newest[project] = (version, load)
    return [load() for _, load in newest.values()]


def live_files(data_dir):
    place = os.environ.get("LETHE_SEGMENTS", "local")
    if place == "local":
        root = os.path.join(data_dir, "segments", "manifests")
        found = []
        for project in os.listdir(root) if os.path.isdir(root) else []:
            for name in os.listdir(os.path.join(root, project)):
                if name.endswith(".json"):
                    path = os.path.join(root, project, name)
                    found.append((project, int(name[:-5]), lambda p=path: json.load(open(p))))
        return [s["path"] for m in _newest(found) for s in m["segments"]]
    import boto3

    bucket, prefix = place[len("s3://"):].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT"], region_name="us-east-1",
                      aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"])
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/manifests/").get("Contents", [])
    found = []
    for obj in listed:
        project, name = obj["Key"].split("/")[-2:]
        load = lambda k=obj["Key"]: json.load(s3.get_object(Bucket=bucket, Key=k)["Body"])
        found.append((project, int(name[:-5]), load))
    local = tempfile.mkdtemp(prefix="lethe-published-")
    # The copies hold event values: they must not outlive the test that reads them.
    atexit.register(shutil.rmtree, local, ignore_errors=True)
    files = []
    for manifest in _newest(found):
        for i, segment in enumerate(manifest["segments"]):
            key = segment["path"][len(f"s3://{bucket}/"):]
            path = os.path.join(local, f"{manifest['project_id']}-{i}.parquet")
            s3.download_file(bucket, key, path)
            files.append(path)
    return files
