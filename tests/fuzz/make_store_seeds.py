#!/usr/bin/env python3
"""Writes the seed corpus of store_http_fuzz (tests/fuzz/corpus/store_http): HTTP responses as etcd's
gateway sends them (and odd ones), and etcd JSON replies. See tests/fuzz/store_http_fuzz.cc for the input
layout: byte 0 picks the mode (even: parser, odd: codec); the parser's bytes 1 and 2 are flags and the
split pattern. Re-run after changing it."""
import pathlib

OUT = pathlib.Path(__file__).resolve().parent / "corpus" / "store_http"

PARSER = {
    "content_length": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"count\":\"1\"}",
    "chunked_ext_trailers": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b;c=\"d;e\"\r\nhello\r\n"
                            b"6\r\n world\r\n0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n",
    "watch_stream": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nGrpc-Metadata-Content-Type: application/grpc\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n8a\r\n{\"result\":{\"header\":{\"cluster_id\":\"1\",\"member_id\":\"2\","
                    b"\"revision\":\"1\",\"raft_term\":\"2\"},\"created\":true}}\n\r\n",
    "error_404": b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"40\r\n{\"error\":\"not found\",\"message\":\"not found\",\"code\":5}        \r\n0\r\n\r\n",
    "interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    "close_delimited": b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil the end",
    "both_lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "bare_lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
}
CODEC = {
    "range": b"{\"header\":{\"revision\":\"4\"},\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":\"2\",\"mod_revision\":\"3\","
             b"\"version\":\"2\",\"value\":\"YmFy\",\"lease\":\"7\"}],\"count\":\"1\",\"more\":true}",
    "txn": b"{\"header\":{\"revision\":\"5\"},\"succeeded\":true,\"responses\":[{\"response_range\":{\"kvs\":[{\"key\":\"YQ==\"}]}},"
           b"{\"response_put\":{}},{\"response_delete_range\":{\"deleted\":\"2\"}}]}",
    "watch_events": b"{\"result\":{\"header\":{\"revision\":\"9\"},\"events\":[{\"kv\":{\"key\":\"YQ==\",\"mod_revision\":\"8\"}},"
                    b"{\"type\":\"DELETE\",\"kv\":{\"key\":\"YQ==\",\"mod_revision\":\"9\"}}]}}\n",
    "keepalive": b"{\"result\":{\"header\":{},\"ID\":\"7\",\"TTL\":\"4\"}}\n",
    "error": b"{\"error\":\"etcdserver: requested lease not found\",\"message\":\"etcdserver: requested lease not found\",\"code\":5}",
    "base64": b"AP8=Zm9vYmFy",
}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, body in PARSER.items():
        (OUT / f"parse_{name}").write_bytes(b"\x00\x00\x5a" + body)
        (OUT / f"parse_{name}_finish_small").write_bytes(b"\x00\x05\x13" + body)
    for name, body in CODEC.items():
        (OUT / f"codec_{name}").write_bytes(b"\x01" + body)


if __name__ == "__main__":
    main()
