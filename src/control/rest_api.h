// RestApi: the agent's REST API (HTTP/JSON, version v1; the OpenAPI 3.1 document is
// docs/api/rest-v1.openapi.json, served at /v1/openapi.json). Errors are RFC 7807 problem documents
// (application/problem+json) with `detail` saying what is wrong and `code` the error's name.
//
//   GET    /v1/openapi.json                the document
//   GET    /v1/cluster                     this agent, the leader, the term
//   GET    /v1/nodes[/{id}]                engines: endpoints, labels, online/offline, cordons
//   PUT    /v1/nodes/{id}/cordon/{label}   cordon (idempotent); DELETE uncordons
//   GET    /v1/pools[/{name}]              pools: spec, capacity, state
//   PUT    /v1/pools/{name}                declare {node, disk, labels}; DELETE [?force=true]
//   GET    /v1/replicas                    replicas of volumes
//   GET    /v1/volumes[/{uuid}]            volumes with their replicas
//   PUT    /v1/volumes/{uuid}              create {size, replicas, thin, topology, labels}; DELETE
//   PUT    /v1/volumes/{uuid}/target       publish {node, protocol, allowed_hosts, republish}; DELETE unpublishes
//   GET    /metrics                        Prometheus text
//
// Status codes: 200 (201 for a new volume or pool), 204 for deletes, 400 bad input (the field named),
// 404 unknown object or path, 405 method, 409 exists with other arguments / in progress / in use,
// 503 a standby (the leader named) or etcd unavailable, 507 no room for the replicas (why, per pool).
//
// Threads: handle() runs on the HTTP server's connection threads and enters the agent's reactor with
// run_sync for each request.
#pragma once

#include <nlohmann/json.hpp>

#include "control/agent.h"
#include "control/http_server.h"
#include "reactor/reactor_set.h"

namespace tern::control {

extern const char* const kOpenApiJson;

class RestApi {
 public:
  RestApi(ReactorSet& rs, Agent& agent) : rs_(rs), agent_(agent) {}
  HttpReply handle(const HttpCall& call);

 private:
  Task<HttpReply> route(HttpCall call);

  ReactorSet& rs_;
  Agent& agent_;
};

// A pool as GET /v1/pools/{name} shows it (also the DiskPool operator's view of it).
nlohmann::json pool_json(const PoolSpec& p, const Cluster& c);

// Errc -> HTTP status, and the problem document for an error.
int http_status(Errc e);
HttpReply problem_reply(const Status& s);

}  // namespace tern::control
