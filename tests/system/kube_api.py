"""A stand-in for the Kubernetes API server, as much of it as tern-agent's DiskPool operator uses (there is
no Kubernetes on these machines): HTTPS with its own CA, bearer-token authentication, the DiskPool
collection of one namespace (list, get, watch with bookmarks and 410 for an expired resourceVersion, JSON
merge patch of the object and of the status subresource with resourceVersion preconditions, finalizers and
deletion) and core/v1 Events.

It behaves as the API server documents (api-concepts: watch events one JSON object per line of a chunked
response, ERROR events carrying a Status, timeoutSeconds ending the watch; RFC 7386 merge patches; a
metadata.resourceVersion in a patch is a precondition, 409 Conflict otherwise; an object with a
deletionTimestamp goes when its last finalizer does) and is stricter where that catches mistakes: the
status subresource is validated against the chart's CRD schema (a field or value the CRD does not have is
422), and a PATCH that is not application/merge-patch+json is 415.

Test-side ("kubectl"): create(), update_spec(), delete(), get(), events(), requests, expire_watches(),
set_token().
"""
import copy
import datetime
import http.server
import json
import pathlib
import socketserver
import ssl
import subprocess
import threading
import time
import urllib.parse

import yaml

from conftest import ROOT

GROUP_PATH = "/apis/tern.io/v1alpha1/namespaces/"


def load_crd_schema():
    for doc in yaml.safe_load_all((ROOT / "deploy/manifests/tern.yaml").read_text()):
        if doc and doc.get("kind") == "CustomResourceDefinition" and doc["metadata"]["name"] == "diskpools.tern.io":
            return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    raise AssertionError("deploy/manifests/tern.yaml has no DiskPool CRD")


def validate(schema, value, path="status"):
    """The subset of OpenAPI v3 the CRD uses; unknown properties are refused (a real server prunes them,
    which would lose what the agent meant to say)."""
    t = schema.get("type")
    if value is None:
        raise ValueError(f"{path}: null")
    if t == "object":
        if not isinstance(value, dict):
            raise ValueError(f"{path}: not an object")
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            if props is not None and k in props:
                validate(props[k], v, f"{path}.{k}")
            elif isinstance(extra, dict):
                validate(extra, v, f"{path}.{k}")
            elif props is not None:
                raise ValueError(f"{path}.{k}: not in the schema")
        for k in schema.get("required", []):
            if k not in value:
                raise ValueError(f"{path}.{k}: required")
    elif t == "string":
        if not isinstance(value, str):
            raise ValueError(f"{path}: not a string")
        if "enum" in schema and value not in schema["enum"]:
            raise ValueError(f"{path}: {value!r} not in {schema['enum']}")
    elif t == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{path}: not an integer")
        if "minimum" in schema and value < schema["minimum"]:
            raise ValueError(f"{path}: below {schema['minimum']}")
    elif t == "array":
        if not isinstance(value, list):
            raise ValueError(f"{path}: not a list")
        for i, v in enumerate(value):
            validate(schema.get("items", {}), v, f"{path}[{i}]")


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def status_doc(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def make_certs(d):
    d = pathlib.Path(d)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, cwd=d)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=stand-in kubernetes CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=kube-apiserver")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:kubernetes.default.svc\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    return d / "ca.crt", d / "server.crt", d / "server.key"


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class KubeApi:
    HISTORY = 1000  # events kept for watches; older resourceVersions get 410
    BOOKMARK_S = 10  # a real server sends one about every minute

    def __init__(self, workdir, namespace="tern", token="token-1"):
        self.ns = namespace
        self.token = token
        self.objects = {}  # name -> object
        self.event_list = []
        self.history = []  # (rv, type, object)
        self.rv = 100
        self.oldest_rv = 100  # a watch from before this is 410
        self.requests = []  # (method, path, status, user agent)
        self.cond = threading.Condition()
        self.stopping = False
        self.expired_sent = 0  # ERROR 410 events sent
        self.expired_to = []  # for each: the index in `requests` of the watch it went to
        self.schema = load_crd_schema()
        self.ca, cert, key = make_certs(workdir)
        self.httpd = _Server(("127.0.0.1", 0), self._handler())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- the store ------------------------------------------------------------------------------------

    def _bump(self, kind, obj):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, kind, copy.deepcopy(obj)))
        if len(self.history) > self.HISTORY:
            self.history.pop(0)
            self.oldest_rv = self.history[0][0]
        self.cond.notify_all()

    def _settle(self, name):
        o = self.objects.get(name)
        if o and o["metadata"].get("deletionTimestamp") and not o["metadata"].get("finalizers"):
            del self.objects[name]
            self._bump("DELETED", o)

    # ---- the test's side ("kubectl") --------------------------------------------------------------------

    def create(self, name, node, disks, labels=None):
        with self.cond:
            assert name not in self.objects, name
            spec = {"node": node, "disks": list(disks)}
            if labels is not None:
                spec["labels"] = labels
            o = {"apiVersion": "tern.io/v1alpha1", "kind": "DiskPool",
                 "metadata": {"name": name, "namespace": self.ns, "uid": f"uid-{name}-{self.rv}", "generation": 1,
                              "creationTimestamp": self._now()},
                 "spec": spec}
            self.objects[name] = o
            self._bump("ADDED", o)

    def update_spec(self, name, **fields):
        with self.cond:
            o = self.objects[name]
            o["spec"].update(fields)
            o["metadata"]["generation"] += 1
            self._bump("MODIFIED", o)

    def delete(self, name):
        with self.cond:
            o = self.objects[name]
            if not o["metadata"].get("finalizers"):
                del self.objects[name]
                self._bump("DELETED", o)
                return
            if not o["metadata"].get("deletionTimestamp"):
                o["metadata"]["deletionTimestamp"] = self._now()
                self._bump("MODIFIED", o)

    def get(self, name):
        with self.cond:
            o = self.objects.get(name)
            return copy.deepcopy(o) if o else None

    def events(self, name=None):
        with self.cond:
            return [copy.deepcopy(e) for e in self.event_list
                    if name is None or e["involvedObject"]["name"] == name]

    def expire_watches(self):
        """As after an etcd compaction: every resourceVersion so far is too old to watch from; open
        watches get an ERROR 410 and end."""
        with self.cond:
            self.rv += 1
            self.oldest_rv = self.rv + 1
            self.cond.notify_all()

    def set_token(self, token):
        with self.cond:
            self.token = token

    def count(self, method, path_prefix, query=None, user_agent=None):
        with self.cond:
            return sum(1 for m, p, _, ua in self.requests
                       if m == method and p.split("?")[0] == path_prefix and (query is None or query in p)
                       and (user_agent is None or ua == user_agent))

    def requests_from(self, user_agent):
        with self.cond:
            return [r for r in self.requests if r[3] == user_agent]

    def annotate(self, name, key, value):
        with self.cond:
            o = self.objects[name]
            o["metadata"].setdefault("annotations", {})[key] = value
            self._bump("MODIFIED", o)

    @staticmethod
    def _now():
        return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    # ---- HTTP ---------------------------------------------------------------------------------------------

    def _handler(self):
        api = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, doc):
                body = json.dumps(doc).encode()
                with api.cond:
                    api.requests.append((self.command, self.path, code, self.headers.get("User-Agent", "")))
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n)) if n else None

            def _auth(self):
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    self._send(401, status_doc(401, "Unauthorized", "Unauthorized"))
                    return False
                return True

            def do_GET(self):
                if not self._auth():
                    return
                u = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                coll = f"{GROUP_PATH}{api.ns}/diskpools"
                if u.path == coll and q.get("watch") in ("true", "1"):
                    return self._watch(q)
                with api.cond:
                    if u.path == coll:
                        items = [copy.deepcopy(o) for _, o in sorted(api.objects.items())]
                        return self._send(200, {"apiVersion": "tern.io/v1alpha1", "kind": "DiskPoolList",
                                                "metadata": {"resourceVersion": str(api.rv)}, "items": items})
                    if u.path.startswith(coll + "/"):
                        name = u.path[len(coll) + 1:]
                        if name in api.objects:
                            return self._send(200, api.objects[name])
                        return self._send(404, status_doc(404, "NotFound", f'diskpools.tern.io "{name}" not found'))
                self._send(404, status_doc(404, "NotFound", "the server could not find the requested resource"))

            def _watch(self, q):
                rv = int(q.get("resourceVersion") or api.rv)
                timeout = float(q.get("timeoutSeconds") or 1800)
                bookmarks = q.get("allowWatchBookmarks") == "true"
                with api.cond:
                    api.requests.append(("GET", self.path, 200, self.headers.get("User-Agent", "")))
                    index = len(api.requests) - 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def chunk(doc):
                    data = (json.dumps(doc) + "\n").encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()

                deadline = time.monotonic() + timeout
                last_bookmark = time.monotonic()
                try:
                    while True:
                        with api.cond:
                            if rv < api.oldest_rv - 1:
                                out = [("ERROR", status_doc(410, "Expired", f"too old resource version: {rv} "
                                                                            f"({api.oldest_rv})"))]
                                done = True
                                api.expired_sent += 1
                                api.expired_to.append(index)
                            else:
                                out = [(k, o) for r, k, o in api.history if r > rv]
                                done = False
                                if not out:
                                    left = deadline - time.monotonic()
                                    if left <= 0 or api.stopping:
                                        break
                                    api.cond.wait(min(left, 0.5))
                                    if rv < api.oldest_rv - 1:
                                        continue
                                    out = [(k, o) for r, k, o in api.history if r > rv]
                        for kind, o in out:
                            chunk({"type": kind, "object": o})
                            if kind != "ERROR":
                                rv = int(o["metadata"]["resourceVersion"])
                        if done:
                            break
                        if bookmarks and time.monotonic() - last_bookmark > api.BOOKMARK_S:
                            chunk({"type": "BOOKMARK", "object": {"kind": "DiskPool", "apiVersion": "tern.io/v1alpha1",
                                                                  "metadata": {"resourceVersion": str(api.rv)}}})
                            last_bookmark = time.monotonic()
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                    pass
                self.close_connection = True

            def do_PATCH(self):
                if not self._auth():
                    return
                if self.headers.get("Content-Type") != "application/merge-patch+json":
                    return self._send(415, status_doc(415, "UnsupportedMediaType",
                                                      f"the body of the request was in an unknown format"))
                u = urllib.parse.urlsplit(self.path)
                coll = f"{GROUP_PATH}{api.ns}/diskpools/"
                if not u.path.startswith(coll):
                    return self._send(404, status_doc(404, "NotFound", "not found"))
                rest = u.path[len(coll):].split("/")
                name, sub = rest[0], (rest[1] if len(rest) > 1 else "")
                patch = self._body()
                with api.cond:
                    o = api.objects.get(name)
                    if o is None:
                        return self._send(404, status_doc(404, "NotFound", f'diskpools.tern.io "{name}" not found'))
                    want_rv = (patch.get("metadata") or {}).get("resourceVersion")
                    if want_rv is not None and want_rv != o["metadata"]["resourceVersion"]:
                        return self._send(409, status_doc(409, "Conflict", "the object has been modified; please "
                                                                           "apply your changes to the latest version"))
                    patched = merge_patch(o, patch)
                    patched["metadata"]["resourceVersion"] = o["metadata"]["resourceVersion"]
                    if sub == "status":
                        new = copy.deepcopy(o)
                        if "status" in patched:
                            new["status"] = patched["status"]
                        else:
                            new.pop("status", None)
                        try:
                            validate(api.schema["properties"]["status"], new.get("status", {}))
                        except ValueError as e:
                            return self._send(422, status_doc(422, "Invalid", f"DiskPool.tern.io \"{name}\" is "
                                                                              f"invalid: {e}"))
                    elif sub == "":
                        new = copy.deepcopy(o)
                        new["metadata"] = patched["metadata"]
                        if patched.get("spec") != o.get("spec"):
                            new["spec"] = patched.get("spec")
                            new["metadata"]["generation"] += 1
                        if o["metadata"].get("deletionTimestamp"):
                            added = set(new["metadata"].get("finalizers") or []) - set(o["metadata"].get("finalizers") or [])
                            if added:
                                return self._send(422, status_doc(422, "Invalid", "no new finalizers can be added "
                                                                                  "if the object is being deleted"))
                    else:
                        return self._send(404, status_doc(404, "NotFound", "not found"))
                    if new != o:
                        api.objects[name] = new
                        api._bump("MODIFIED", new)
                        api._settle(name)
                    return self._send(200, new)

            def do_POST(self):
                if not self._auth():
                    return
                u = urllib.parse.urlsplit(self.path)
                if u.path != f"/api/v1/namespaces/{api.ns}/events":
                    return self._send(404, status_doc(404, "NotFound", "not found"))
                e = self._body()
                missing = [k for k in ("involvedObject", "reason", "message", "type") if not e.get(k)]
                if missing or e["type"] not in ("Normal", "Warning") or e.get("kind") != "Event":
                    return self._send(422, status_doc(422, "Invalid", f"Event is invalid: {missing or e.get('type')}"))
                md = e.setdefault("metadata", {})
                if "name" not in md:
                    md["name"] = md.get("generateName", "") + f"{len(api.event_list):05x}"
                with api.cond:
                    api.event_list.append(e)
                return self._send(201, e)

            def do_PUT(self):
                self._send(405, status_doc(405, "MethodNotAllowed", "not used by the agent"))

            do_DELETE = do_PUT

        return H
