#include "cluster_cmds.h"

#include <yaml-cpp/yaml.h>

#include <ctime>

#include "common/strings.h"
#include "common/units.h"
#include "common/uuid.h"
#include "engine_client.h"
#include "restclient/rest_client.h"

namespace tern::ctl {

using json = nlohmann::json;
using rest::RestReply;
using rest::problem_detail;
using rest::rest_call;

namespace {

struct ClusterArgs {
  std::string agents = "http://127.0.0.1:8081";
  std::string agent_ca;  // PEM CA bundle for https agents
  int64_t max_snapshots = -1;  // volume set: -1 = not given
  std::string rate;
  std::string name, node, disk, size = "", kind, snapshot;
  uint32_t replicas = 1;
  bool thin = false, force = false;
  std::vector<std::string> labels, node_labels, pool_labels, spread;
  std::string cordon_label = "ternctl";
};
ClusterArgs c;

std::vector<std::string> agent_list() { return split_commas(c.agents); }

int exit_for(const RestReply& r) {
  std::string code = r.body.is_object() && r.body.contains("code") && r.body["code"].is_string() ? r.body["code"].get<std::string>() : "";
  switch (r.status) {
    case 400: return 9;
    case 404: return 3;
    case 409: return code == "EEXIST" ? 4 : 5;
    case 503: return 7;
    case 507: return 6;
    default: return r.status < 300 ? 0 : 1;
  }
}

// One REST call: the error printed (exit code returned), or the reply in `out`.
int rest(const std::string& method, const std::string& path, const json* body, RestReply* out) {
  auto r = rest_call(agent_list(), method, path, body, g.timeout_s, c.agent_ca);
  if (!r.ok()) {
    fmt::print(stderr, "ternctl: {}; choose it with --agent or TERN_AGENT\n", r.status().message());
    return 7;
  }
  if (r->status >= 300) {
    fmt::print(stderr, "ternctl: {}\n", problem_detail(*r));
    return exit_for(*r);
  }
  *out = std::move(*r);
  return 0;
}

void emit_yaml(YAML::Emitter& e, const json& j) {
  if (j.is_object()) {
    e << YAML::BeginMap;
    for (auto it = j.begin(); it != j.end(); ++it) {
      e << YAML::Key << it.key() << YAML::Value;
      emit_yaml(e, it.value());
    }
    e << YAML::EndMap;
  } else if (j.is_array()) {
    e << YAML::BeginSeq;
    for (const json& v : j) emit_yaml(e, v);
    e << YAML::EndSeq;
  } else if (j.is_string()) {
    e << j.get<std::string>();
  } else if (j.is_null()) {
    e << YAML::Null;
  } else {
    e << j.dump();
  }
}

// Prints `j` as JSON/YAML, or calls `table`.
int show_json(const json& j, const std::function<void()>& table) {
  if (g.format() == Format::kJson) {
    fmt::print("{}\n", j.dump(2));
  } else if (g.format() == Format::kYaml) {
    YAML::Emitter e;
    emit_yaml(e, j);
    fmt::print("{}\n", e.c_str());
  } else {
    table();
  }
  return 0;
}

std::string str(const json& j, const char* k) {
  auto it = j.find(k);
  if (it == j.end() || it->is_null()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string bytes(const json& j, const char* k) {
  auto it = j.find(k);
  return it != j.end() && it->is_number_unsigned() ? format_size(it->get<uint64_t>()) : "-";
}

std::string labels_text(const json& l) {
  std::string out;
  if (l.is_object()) {
    for (auto it = l.begin(); it != l.end(); ++it) {
      out += fmt::format("{}{}={}", out.empty() ? "" : ",", it.key(), it.value().is_string() ? it.value().get<std::string>() : "");
    }
  }
  return out.empty() ? "-" : out;
}

void nodes_table(const json& a) {
  std::vector<std::vector<std::string>> rows;
  for (const json& n : a) {
    std::string cordons;
    for (const json& x : n["cordons"]) cordons += (cordons.empty() ? "" : ",") + x.get<std::string>();
    std::string draining = n.value("evacuating", false) ? "replicas" : n.value("draining", false) ? "targets" : "-";
    rows.push_back({str(n, "id"), str(n, "status"), str(n, "grpc_endpoint"), str(n, "nvmf_endpoint"), labels_text(n["labels"]),
                    cordons.empty() ? "-" : cordons, draining});
  }
  print_table({"NODE", "STATUS", "GRPC", "NVMF", "LABELS", "CORDONED", "DRAINING"}, rows, "nodes");
}

void pools_table(const json& a) {
  std::vector<std::vector<std::string>> rows;
  for (const json& p : a) {
    rows.push_back({str(p, "name"), str(p, "node"), str(p, "status"), bytes(p, "capacity"), bytes(p, "used"),
                    bytes(p, "committed"), str(p, "replicas"), str(p, "disk")});
  }
  print_table({"POOL", "NODE", "STATUS", "CAPACITY", "USED", "COMMITTED", "REPLICAS", "DISK"}, rows, "pools");
}

void replicas_table(const json& a) {
  std::vector<std::vector<std::string>> rows;
  for (const json& r : a) {
    rows.push_back({str(r, "uuid"), str(r, "volume"), str(r, "node"), str(r, "pool"), bytes(r, "size"),
                    r.value("thin", false) ? "thin" : "thick", str(r, "status")});
  }
  print_table({"REPLICA", "VOLUME", "NODE", "POOL", "SIZE", "PROVISIONING", "STATUS"}, rows, "replicas");
}

void volumes_table(const json& a) {
  std::vector<std::vector<std::string>> rows;
  for (const json& v : a) {
    std::string target = v.contains("target") ? str(v["target"], "node") : "-";
    rows.push_back({str(v, "uuid"), bytes(v, "size"), fmt::format("{}/{}", v["replica_details"].size(), str(v, "replicas")),
                    v.value("thin", false) ? "thin" : "thick", str(v, "status"), target});
  }
  print_table({"VOLUME", "SIZE", "REPLICAS", "PROVISIONING", "STATUS", "TARGET"}, rows, "volumes");
}

void snapshots_table(const json& a) {
  std::vector<std::vector<std::string>> rows;
  for (const json& s : a) {
    std::string nodes;
    for (const json& p : s["parts"]) nodes += (nodes.empty() ? "" : ",") + str(p, "node");
    rows.push_back({str(s, "uuid"), str(s, "name"), str(s, "volume"), bytes(s, "size"), str(s, "status"),
                    fmt::format("{}", s["parts"].size()), nodes.empty() ? "-" : nodes, str(s, "clones")});
  }
  print_table({"SNAPSHOT", "NAME", "VOLUME", "SIZE", "STATUS", "PARTS", "NODES", "CLONES"}, rows, "snapshots");
}

std::string ns_time(const json& j, const char* k) {
  auto it = j.find(k);
  if (it == j.end() || !it->is_number_unsigned() || it->get<uint64_t>() == 0) return "-";
  std::time_t t = std::time_t(it->get<uint64_t>() / 1'000'000'000ull);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

void rebuilds_table(const json& a) {
  std::vector<std::vector<std::string>> rows;
  for (const json& r : a) {
    uint64_t el = r.value("elapsed_ns", uint64_t(0));
    rows.push_back({ns_time(r, "ended_ns"), str(r, "child"), str(r, "kind"), str(r, "state"), bytes(r, "total_bytes"),
                    bytes(r, "copied_bytes"), fmt::format("{:.1f}s", double(el) / 1e9), r.value("reason", std::string()).empty() ? "-" : str(r, "reason"),
                    r.value("error", std::string()).empty() ? "-" : str(r, "error")});
  }
  print_table({"ENDED (UTC)", "CHILD", "KIND", "STATE", "VOLUME", "COPIED", "TOOK", "REASON", "ERROR"}, rows, "rebuilds");
}

Result<json> kv_labels(const std::vector<std::string>& in, const char* flag) {
  json o = json::object();
  for (const std::string& l : in) {
    size_t eq = l.find('=');
    if (eq == 0 || eq == std::string::npos) return Status::Errorf(Errc::kInval, "{} '{}': expected KEY=VALUE", flag, l);
    o[l.substr(0, eq)] = l.substr(eq + 1);
  }
  return o;
}

}  // namespace

void add_cluster_commands(CLI::App& app, std::function<int()>* run) {
  if (const char* e = getenv("TERN_AGENT")) c.agents = e;
  app.add_option("--agent", c.agents, "The core agent's REST API for cluster commands, e.g. http://host:8081 "
                                      "(comma-separated: any of them) [TERN_AGENT]")
      ->capture_default_str();
  if (const char* e = getenv("TERN_AGENT_CA")) c.agent_ca = e;
  app.add_option("--agent-ca", c.agent_ca, "PEM CA certificate(s) to check an https:// agent's certificate with (default: the "
                                           "system's CAs) [TERN_AGENT_CA]");

  auto* get = app.add_subcommand("get", "List the cluster's nodes, pools, volumes or replicas (from the agent)");
  get->require_subcommand(1);
  for (auto [what, help] : {std::pair{"nodes", "Engines that registered: status, endpoints, labels, cordons"},
                            std::pair{"pools", "Declared pools: status, capacity, used, committed"},
                            std::pair{"volumes", "Volumes: size, replicas, status, target"},
                            std::pair{"replicas", "Replicas of volumes: node, pool, status"},
                            std::pair{"snapshots", "Volume snapshots: their volume, parts (nodes) and clones"}}) {
    auto* s = get->add_subcommand(what, help);
    std::string w = what;
    if (w != "replicas") s->add_option("name", c.name, "Only this one");
    s->callback([run, w] {
      *run = [w] {
        std::string path = "/v1/" + w + (c.name.empty() ? "" : "/" + c.name);
        RestReply r;
        if (int rc = rest("GET", path, nullptr, &r)) return rc;
        json a = r.body.is_array() ? r.body : json::array({r.body});
        return show_json(r.body, [&] {
          if (w == "nodes") nodes_table(a);
          if (w == "pools") pools_table(a);
          if (w == "volumes") volumes_table(a);
          if (w == "replicas") replicas_table(a);
          if (w == "snapshots") snapshots_table(a);
        });
      };
    });
  }

  auto* describe = app.add_subcommand("describe", "Everything about one object");
  describe->require_subcommand(1);
  auto* dv = describe->add_subcommand("volume", "A volume: its spec, replicas (nodes, pools, status) and target");
  dv->add_option("uuid", c.name, "The volume's UUID")->required();
  dv->callback([run] {
    *run = [] {
      RestReply r;
      if (int rc = rest("GET", "/v1/volumes/" + c.name, nullptr, &r)) return rc;
      const json& v = r.body;
      return show_json(v, [&] {
        fmt::print("volume:      {}\nsize:        {}\nreplicas:    {} wanted, {} placed\nprovisioning: {}\nstatus:      {} ({})\n",
                   str(v, "uuid"), bytes(v, "size"), str(v, "replicas"), v["replica_details"].size(),
                   v.value("thin", false) ? "thin" : "thick", str(v, "status"), str(v, "state"));
        if (v.value("max_snapshots", 0) || v.value("rebuild_rate_bytes_per_s", uint64_t(0))) {
          uint64_t rate = v.value("rebuild_rate_bytes_per_s", uint64_t(0));
          fmt::print("properties:  max snapshots {}, rebuild rate {}\n", v.value("max_snapshots", 0) ? str(v, "max_snapshots") : "unlimited",
                     rate ? format_size(rate) + "/s" : "unlimited");
        }
        fmt::print("labels:      {}\ntopology:    nodes {}, pools {}, spread {}\n", labels_text(v["labels"]),
                   labels_text(v["topology"]["node_labels"]), labels_text(v["topology"]["pool_labels"]),
                   v["topology"]["spread"].empty() ? "-" : v["topology"]["spread"].dump());
        if (v.contains("source_snapshot")) fmt::print("restored:    from snapshot {}\n", str(v, "source_snapshot"));
        if (v.contains("target")) {
          fmt::print("target:      {} on {} ({}) {}\n", str(v["target"], "protocol"), str(v["target"], "node"),
                     str(v["target"], "state"), str(v["target"], "uri"));
        } else {
          fmt::print("target:      not published\n");
        }
        fmt::print("\n");
        replicas_table(v["replica_details"]);
        if (v.contains("nexus")) {
          const json& n = v["nexus"];
          std::map<std::string, std::string> node_of;
          for (const json& r : v["replica_details"]) node_of[str(r, "uuid")] = str(r, "node");
          fmt::print("\nnexus:       {} (generation {})\n", str(n, "state"), str(n, "generation"));
          std::vector<std::vector<std::string>> rows;
          for (const json& ch : n["children"]) {
            std::string reb = "-";
            if (ch.contains("rebuild")) {
              const json& r = ch["rebuild"];
              uint64_t total = r.value("total_bytes", uint64_t(0)), done = r.value("done_bytes", uint64_t(0));
              double pct = total ? 100.0 * double(done) / double(total) : 100.0;
              int filled = int(pct / 5);
              reb = fmt::format("{} {} [{}{}] {:.0f}% ({} copied)", str(r, "kind"), str(r, "state"), std::string(filled, '#'),
                                std::string(20 - filled, '.'), pct, bytes(r, "copied_bytes"));
            }
            std::string id = str(ch, "uuid");
            rows.push_back({id, node_of.count(id) ? node_of[id] : "-", str(ch, "state"), ch.value("synced", false) ? "yes" : "no",
                            ch.value("local", false) ? "local" : "remote", reb});
          }
          print_table({"CHILD", "NODE", "STATE", "SYNCED", "PATH", "REBUILD"}, rows, "children");
        }
      });
    };
  });

  auto* vol = app.add_subcommand("volume", "Create and destroy volumes (through the agent)");
  vol->require_subcommand(1);
  auto* vc = vol->add_subcommand("create", "Create a volume: replicas placed on distinct nodes (idempotent by UUID)");
  vc->add_option("uuid", c.name, "The volume's UUID (default: a new one, printed)");
  vc->add_option("--size", c.size, "Size (1GiB, 500MiB, bytes); required unless restoring");
  vc->add_option("--from-snapshot", c.snapshot,
                 "Restore: the volume's replicas are thin clones of this snapshot's parts (on their pools; --replicas "
                 "at most its parts; the snapshot's size)");
  vc->add_option("--replicas", c.replicas, "How many copies, each on its own node")->capture_default_str();
  vc->add_flag("--thin", c.thin, "Thin provisioned: space is allocated as it is written");
  vc->add_option("--spread", c.spread, "Node label key whose values must differ between replicas (zone); repeatable");
  vc->add_option("--node-label", c.node_labels, "Replicas only on nodes with KEY=VALUE; repeatable");
  vc->add_option("--pool-label", c.pool_labels, "Replicas only in pools with KEY=VALUE; repeatable");
  vc->add_option("--label", c.labels, "The volume's own KEY=VALUE labels; repeatable");
  vc->callback([run] {
    *run = [] {
      Result<uint64_t> size = uint64_t(0);
      if (!c.size.empty() || c.snapshot.empty()) size = size_arg(c.size);
      if (!size.ok()) return bad_arg(size.status());
      auto nl = kv_labels(c.node_labels, "--node-label");
      auto pl = kv_labels(c.pool_labels, "--pool-label");
      auto ll = kv_labels(c.labels, "--label");
      for (auto* r : {&nl, &pl, &ll}) {
        if (!r->ok()) return bad_arg(r->status());
      }
      std::string id = c.name.empty() ? Uuid::Generate().ToString() : c.name;
      json body = {{"replicas", c.replicas}, {"thin", c.thin || !c.snapshot.empty()}, {"labels", *ll},
                   {"topology", {{"node_labels", *nl}, {"pool_labels", *pl}, {"spread", c.spread}}}};
      if (*size) body["size"] = *size;
      if (!c.snapshot.empty()) body["snapshot"] = c.snapshot;
      RestReply r;
      if (int rc = rest("PUT", "/v1/volumes/" + id, &body, &r)) return rc;
      return show_json(r.body, [&] {
        fmt::print("volume {} {}: {}, {} replica(s) on {}\n", id, r.status == 201 ? "created" : "exists", bytes(r.body, "size"),
                   r.body["replica_details"].size(), [&] {
                     std::string n;
                     for (const json& x : r.body["replica_details"]) n += (n.empty() ? "" : ", ") + str(x, "node");
                     return n;
                   }());
      });
    };
  });
  auto* vp = vol->add_subcommand("publish", "Publish a volume: its nexus on a node (default: one holding a replica), "
                                              "over NVMe/TCP or NBD (idempotent)");
  vp->add_option("uuid", c.name, "The volume's UUID")->required();
  vp->add_option("--node", c.node, "The node for the nexus");
  vp->add_option("--protocol", c.kind, "nvmf (default) or nbd");
  vp->add_option("--host", c.labels, "A host NQN allowed to connect (NVMe/TCP); repeatable; default: any");
  vp->add_flag("--republish", c.force, "Move a volume published on another node");
  vp->callback([run] {
    *run = [] {
      json body = {{"republish", c.force}, {"allowed_hosts", c.labels}};
      if (!c.node.empty()) body["node"] = c.node;
      if (!c.kind.empty()) body["protocol"] = c.kind;
      RestReply r;
      if (int rc = rest("PUT", "/v1/volumes/" + c.name + "/target", &body, &r)) return rc;
      return show_json(r.body, [&] {
        fmt::print("volume {} published on {} (generation {}): {}\n", c.name, str(r.body["target"], "node"),
                   str(r.body["target"], "generation"), str(r.body["target"], "uri"));
      });
    };
  });
  auto* vu = vol->add_subcommand("unpublish", "Unpublish a volume (its nexus shut down cleanly and destroyed)");
  vu->add_option("uuid", c.name, "The volume's UUID")->required();
  vu->callback([run] {
    *run = [] {
      RestReply r;
      if (int rc = rest("DELETE", "/v1/volumes/" + c.name + "/target", nullptr, &r)) return rc;
      if (g.format() == Format::kTable) fmt::print("volume {} unpublished\n", c.name);
      return 0;
    };
  });
  auto* vs = vol->add_subcommand("scale", "Set how many replicas a volume has (new ones are rebuilt; removed ones leave the "
                                          "nexus first)");
  vs->add_option("uuid", c.name, "The volume's UUID")->required();
  vs->add_option("replicas", c.replicas, "The new count (1 to 8)")->required();
  vs->callback([run] {
    *run = [] {
      RestReply r;
      if (int rc = rest("PUT", fmt::format("/v1/volumes/{}/replica_count/{}", c.name, c.replicas), nullptr, &r)) return rc;
      return show_json(r.body, [&] {
        fmt::print("volume {} has {} replica(s)\n", c.name, str(r.body, "replicas"));
        replicas_table(r.body["replica_details"]);
      });
    };
  });
  auto* ve = vol->add_subcommand("expand", "Grow a volume online (its replicas, then its nexus; hosts see the new size)");
  ve->add_option("uuid", c.name, "The volume's UUID")->required();
  ve->add_option("--size", c.size, "The new size (larger than now)")->required();
  ve->callback([run] {
    *run = [] {
      auto size = size_arg(c.size);
      if (!size.ok()) return bad_arg(size.status());
      RestReply r;
      if (int rc = rest("PUT", fmt::format("/v1/volumes/{}/size/{}", c.name, *size), nullptr, &r)) return rc;
      return show_json(r.body, [&] { fmt::print("volume {} is {}\n", c.name, bytes(r.body, "size")); });
    };
  });
  auto* vd = vol->add_subcommand("destroy", "Destroy a volume and its replicas");
  vd->add_option("uuid", c.name, "The volume's UUID")->required();
  vd->callback([run] {
    *run = [] {
      RestReply r;
      if (int rc = rest("DELETE", "/v1/volumes/" + c.name, nullptr, &r)) return rc;
      if (g.format() == Format::kTable) fmt::print("volume {} destroyed\n", c.name);
      return 0;
    };
  });

  auto* vset = vol->add_subcommand("set", "Set a volume's properties: its labels, a snapshot limit, a rebuild rate limit");
  vset->add_option("uuid", c.name, "The volume's UUID")->required();
  vset->add_option("--label", c.labels, "KEY=VALUE; repeatable; replaces the volume's labels (--label '' clears them)");
  vset->add_option("--max-snapshots", c.max_snapshots, "At most this many snapshots (0: no limit)");
  vset->add_option("--rebuild-rate", c.rate, "Its rebuilds copy at most this much per second (100MiB; 0: no limit); running ones "
                                            "at once");
  vset->callback([run] {
    *run = [] {
      json body = json::object();
      if (!c.labels.empty()) {
        std::vector<std::string> kv;
        for (const std::string& l : c.labels) {
          if (!l.empty()) kv.push_back(l);
        }
        auto ll = kv_labels(kv, "--label");
        if (!ll.ok()) return bad_arg(ll.status());
        body["labels"] = *ll;
      }
      if (c.max_snapshots >= 0) body["max_snapshots"] = c.max_snapshots;
      if (!c.rate.empty()) {
        Result<uint64_t> rate = c.rate == "0" ? Result<uint64_t>(uint64_t(0)) : size_arg(c.rate);
        if (!rate.ok()) return bad_arg(rate.status());
        body["rebuild_rate_bytes_per_s"] = *rate;
      }
      if (body.empty()) return bad_arg(Status(Errc::kInval, "nothing to set: give --label, --max-snapshots or --rebuild-rate"));
      RestReply r;
      if (int rc = rest("PUT", fmt::format("/v1/volumes/{}/properties", c.name), &body, &r)) return rc;
      return show_json(r.body, [&] {
        uint64_t rate = r.body.value("rebuild_rate_bytes_per_s", uint64_t(0));
        fmt::print("volume {}: labels {}, max snapshots {}, rebuild rate {}\n", c.name, labels_text(r.body["labels"]),
                   r.body.value("max_snapshots", 0) ? str(r.body, "max_snapshots") : "unlimited",
                   rate ? format_size(rate) + "/s" : "unlimited");
      });
    };
  });
  auto* vsn = vol->add_subcommand("snapshot", "Snapshot a volume: every current replica at one instant (through its nexus "
                                               "when published); idempotent by snapshot UUID");
  vsn->add_option("uuid", c.name, "The volume's UUID")->required();
  vsn->add_option("snapshot", c.snapshot, "The snapshot's UUID (default: a new one, printed)");
  vsn->add_option("--name", c.kind, "A name for it (default: its UUID)");
  vsn->callback([run] {
    *run = [] {
      std::string id = c.snapshot.empty() ? Uuid::Generate().ToString() : c.snapshot;
      json body = json::object();
      if (!c.kind.empty()) body["name"] = c.kind;
      RestReply r;
      if (int rc = rest("PUT", fmt::format("/v1/volumes/{}/snapshots/{}", c.name, id), &body, &r)) return rc;
      return show_json(r.body, [&] {
        std::string nodes;
        for (const json& p : r.body["parts"]) nodes += (nodes.empty() ? "" : ", ") + str(p, "node");
        fmt::print("snapshot {} of volume {} {}: {} part(s) on {}\n", id, c.name, r.status == 201 ? "taken" : "exists",
                   r.body["parts"].size(), nodes);
      });
    };
  });
  auto* vsd = vol->add_subcommand("snapshot-destroy", "Destroy a volume snapshot (clones made from it keep their data)");
  vsd->add_option("snapshot", c.snapshot, "The snapshot's UUID")->required();
  vsd->callback([run] {
    *run = [] {
      RestReply r;
      if (int rc = rest("DELETE", "/v1/snapshots/" + c.snapshot, nullptr, &r)) return rc;
      if (g.format() == Format::kTable) fmt::print("snapshot {} destroyed\n", c.snapshot);
      return 0;
    };
  });

  auto* rh = app.add_subcommand("rebuild-history", "A volume's finished rebuilds (full or partial, what they copied, why)");
  rh->add_option("uuid", c.name, "The volume's UUID")->required();
  rh->callback([run] {
    *run = [] {
      RestReply r;
      if (int rc = rest("GET", fmt::format("/v1/volumes/{}/rebuild_history", c.name), nullptr, &r)) return rc;
      return show_json(r.body, [&] { rebuilds_table(r.body["rebuilds"]); });
    };
  });

  // Cordons join the engine's `node` group.
  CLI::App* node = nullptr;
  for (CLI::App* s : app.get_subcommands([](CLI::App* a) { return a->get_name() == "node"; })) node = s;
  if (!node) node = app.add_subcommand("node", "Nodes");
  for (bool on : {true, false}) {
    auto* s = node->add_subcommand(on ? "cordon" : "uncordon",
                                   on ? "Place nothing new on a node (through the agent; idempotent)"
                                      : "Lift a cordon (through the agent; idempotent)");
    s->add_option("node", c.node, "The node")->required();
    s->add_option("--label", c.cordon_label, "The cordon's label (several may be set; the node is cordoned while any is)")
        ->capture_default_str();
    s->callback([run, on] {
      *run = [on] {
        RestReply r;
        if (int rc = rest(on ? "PUT" : "DELETE", "/v1/nodes/" + c.node + "/cordon/" + c.cordon_label, nullptr, &r)) return rc;
        return show_json(r.body, [&] { nodes_table(json::array({r.body})); });
      };
    });
  }

  auto* drain = node->add_subcommand("drain", "Cordon a node and move every volume target on it to another node "
                                              "(through the agent)");
  drain->add_option("node", c.node, "The node")->required();
  drain->add_option("--label", c.cordon_label, "The cordon's label")->capture_default_str();
  drain->add_flag("--replicas", c.force,
                  "Also move every replica off the node (each rebuilt elsewhere before the old one goes; the agent "
                  "works through them in the background: watch `ternctl get nodes`)");
  drain->callback([run] {
    *run = [] {
      RestReply r;
      if (int rc = rest("PUT", "/v1/nodes/" + c.node + "/drain/" + c.cordon_label + (c.force ? "?replicas=true" : ""), nullptr, &r)) {
        return rc;
      }
      return show_json(r.body, [&] {
        nodes_table(json::array({r.body}));
        if (r.body.value("evacuating", false)) {
          fmt::print("\n{} replica(s) on {} are being moved; the node's DRAINING ends when none is left\n", str(r.body, "replicas"), c.node);
        }
      });
    };
  });

  auto* cluster = app.add_subcommand("cluster", "The cluster as the agent sees it");
  cluster->require_subcommand(1);
  auto* pool = cluster->add_subcommand("pool", "Declare pools on nodes (the agent creates or imports them)");
  pool->require_subcommand(1);
  auto* add = pool->add_subcommand("add", "Declare a pool on a node's disk (created, or imported if the disk holds it)");
  add->add_option("name", c.name, "Pool name, unique in the cluster")->required();
  add->add_option("--node", c.node, "The node")->required();
  add->add_option("--disk", c.disk, "A device URI on that node (uring:///dev/sdb)")->required();
  add->add_option("--label", c.labels, "KEY=VALUE; repeatable");
  add->callback([run] {
    *run = [] {
      auto ll = kv_labels(c.labels, "--label");
      if (!ll.ok()) return bad_arg(ll.status());
      json body = {{"node", c.node}, {"disk", c.disk}, {"labels", *ll}};
      RestReply r;
      if (int rc = rest("PUT", "/v1/pools/" + c.name, &body, &r)) return rc;
      return show_json(r.body, [&] { pools_table(json::array({r.body})); });
    };
  });
  auto* rm = pool->add_subcommand("remove", "Destroy a declared pool (refused while it holds replicas, unless --force)");
  rm->add_option("name", c.name, "Pool name")->required();
  rm->add_flag("--force", c.force, "Take its replicas out of their volumes and destroy them too");
  rm->callback([run] {
    *run = [] {
      RestReply r;
      if (int rc = rest("DELETE", "/v1/pools/" + c.name + (c.force ? "?force=true" : ""), nullptr, &r)) return rc;
      if (g.format() == Format::kTable) fmt::print("pool '{}' destroyed\n", c.name);
      return 0;
    };
  });
  auto* st = cluster->add_subcommand("status", "The agent answering, the leader, and counts of nodes and volumes");
  st->callback([run] {
    *run = [] {
      RestReply info, nodes, vols;
      if (int rc = rest("GET", "/v1/cluster", nullptr, &info)) return rc;
      if (int rc = rest("GET", "/v1/nodes", nullptr, &nodes)) return rc;
      if (int rc = rest("GET", "/v1/volumes", nullptr, &vols)) return rc;
      json all = {{"cluster", info.body}, {"nodes", nodes.body}, {"volumes", vols.body}};
      return show_json(all, [&] {
        size_t up = 0;
        for (const json& n : nodes.body) up += n["status"] == "online";
        std::map<std::string, size_t> by;
        for (const json& v : vols.body) by[v["status"].get<std::string>()]++;
        std::string vs;
        for (auto& [k, n] : by) vs += fmt::format("{}{} {}", vs.empty() ? "" : ", ", n, k);
        fmt::print("leader:   {} (term {})\nnodes:    {} of {} online\nvolumes:  {}\n", str(info.body, "leader"),
                   str(info.body, "term"), up, nodes.body.size(), vs.empty() ? "none" : vs);
      });
    };
  });
}

}  // namespace tern::ctl
