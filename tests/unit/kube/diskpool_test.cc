// The DiskPool model: objects as the API server sends them, the status and patches the agent writes, the
// watch stream's lines and events; and the restclient's URL parsing the Kubernetes client relies on.
#include "kube/diskpool.h"

#include <gtest/gtest.h>

#include "restclient/connection.h"

using namespace tern;
using namespace tern::kube;
using nlohmann::json;

namespace {

json object(json spec) {
  return {{"apiVersion", "tern.io/v1alpha1"},
          {"kind", "DiskPool"},
          {"metadata",
           {{"name", "pool-a"}, {"namespace", "tern"}, {"uid", "u-1"}, {"resourceVersion", "42"}, {"generation", 3}}},
          {"spec", spec}};
}

}  // namespace

TEST(DiskPool, ParsesAnObject) {
  json o = object({{"node", "node1"}, {"disks", {"/dev/sdb"}}, {"labels", {{"class", "ssd"}}}});
  o["metadata"]["finalizers"] = {"other/x", std::string(kFinalizer)};
  o["status"] = {{"state", "Created"}};
  auto dp = parse_diskpool(o);
  ASSERT_TRUE(dp.ok()) << dp.status();
  EXPECT_EQ(dp->name, "pool-a");
  EXPECT_EQ(dp->ns, "tern");
  EXPECT_EQ(dp->uid, "u-1");
  EXPECT_EQ(dp->resource_version, "42");
  EXPECT_EQ(dp->generation, 3);
  EXPECT_FALSE(dp->deleting);
  EXPECT_TRUE(dp->has_finalizer());
  EXPECT_EQ(dp->node, "node1");
  EXPECT_EQ(dp->disk_uri(), "uring:///dev/sdb");
  EXPECT_EQ(dp->labels.at("class"), "ssd");
  EXPECT_EQ(dp->status["state"], "Created");
  EXPECT_TRUE(validate_spec(*dp).ok());
}

TEST(DiskPool, KeepsAUriAndSeesADeletion) {
  json o = object({{"node", "n"}, {"disks", {"aio:///dev/sdc"}}});
  o["metadata"]["deletionTimestamp"] = "2026-12-05T10:00:00Z";
  auto dp = parse_diskpool(o);
  ASSERT_TRUE(dp.ok());
  EXPECT_TRUE(dp->deleting);
  EXPECT_FALSE(dp->retain);
  o["metadata"]["annotations"] = {{std::string(kRetainAnnotation), "true"}};
  EXPECT_TRUE(parse_diskpool(o)->retain);
  o["metadata"]["annotations"] = {{std::string(kRetainAnnotation), "yes"}};
  EXPECT_FALSE(parse_diskpool(o)->retain);
  o["metadata"]["annotations"] = "x";
  EXPECT_EQ(parse_diskpool(o).code(), Errc::kInval);
  o["metadata"].erase("annotations");
  dp = parse_diskpool(o);
  EXPECT_FALSE(dp->has_finalizer());
  EXPECT_EQ(dp->disk_uri(), "aio:///dev/sdc");
}

TEST(DiskPool, RefusesObjectsWithoutAName) {
  EXPECT_EQ(parse_diskpool(json::array()).code(), Errc::kInval);
  EXPECT_EQ(parse_diskpool(json{{"kind", "DiskPool"}}).code(), Errc::kInval);
  EXPECT_EQ(parse_diskpool(json{{"metadata", {{"name", 3}}}}).code(), Errc::kInval);
  EXPECT_EQ(parse_diskpool(json{{"kind", "Pod"}, {"metadata", {{"name", "x"}}}}).code(), Errc::kInval);
  EXPECT_EQ(parse_diskpool(json{{"metadata", {{"name", "x"}, {"finalizers", "no"}}}}).code(), Errc::kInval);
}

TEST(DiskPool, BadSpecsParseButDoNotValidate) {
  struct Case {
    json spec;
    const char* says;
  } cases[] = {
      {json(), "spec: missing"},
      {json{{"node", 1}, {"disks", {"/d"}}}, "spec.node"},
      {json{{"disks", {"/d"}}}, "spec.node"},
      {json{{"node", "n"}}, "exactly one disk"},
      {json{{"node", "n"}, {"disks", {"/a", "/b"}}}, "exactly one disk"},
      {json{{"node", "n"}, {"disks", {1}}}, "spec.disks[0]"},
      {json{{"node", "n"}, {"disks", {"sdb"}}}, "neither a path nor a device URI"},
      {json{{"node", "n"}, {"disks", {"/d"}}, {"labels", {{"a", 1}}}}, "spec.labels.a"},
  };
  for (const Case& c : cases) {
    json o = object(c.spec);
    if (c.spec.is_null()) o.erase("spec");
    auto dp = parse_diskpool(o);
    ASSERT_TRUE(dp.ok()) << c.spec.dump();
    Status s = validate_spec(*dp);
    EXPECT_EQ(s.code(), Errc::kInval) << c.spec.dump();
    EXPECT_NE(s.message().find(c.says), std::string::npos) << s.message();
  }
}

TEST(DiskPool, StatusFollowsThePool) {
  auto dp = parse_diskpool(object({{"node", "n1"}, {"disks", {"/d"}}}));
  ASSERT_TRUE(dp.ok());
  PoolView v;
  v.node = "n1";
  v.disk = "uring:///d";
  v.state = "created";
  v.status = "online";
  v.capacity = 1000;
  v.used = 10;
  v.committed = 20;
  v.replicas = 2;
  json s = pool_status(*dp, &v, "", "");
  EXPECT_EQ(s, (json{{"state", "Created"},
                     {"poolStatus", "online"},
                     {"capacity", 1000},
                     {"used", 10},
                     {"committed", 20},
                     {"replicas", 2},
                     {"observedGeneration", 3}}));
  // A created pool whose node is away: the agent says offline without a reason; the status gives one.
  v.status = "offline";
  v.capacity.reset();
  s = pool_status(*dp, &v, "", "");
  EXPECT_EQ(s["state"], "Created");
  EXPECT_EQ(s["reason"], "node 'n1' is offline");
  EXPECT_FALSE(s.contains("capacity"));
  // A pool waiting for its node: the agent's reason is kept.
  v.state = "creating";
  v.status = "creating";
  v.reason = "node n1 is offline; the pool is created when it returns";
  s = pool_status(*dp, &v, "", "");
  EXPECT_EQ(s["state"], "Creating");
  EXPECT_EQ(s["poolStatus"], "creating");
  EXPECT_EQ(s["reason"], v.reason);
  v.reason.clear();
  // A status the CRD's enum does not have is shown as unknown (the API server would refuse it).
  v.status = "faulted";
  EXPECT_EQ(pool_status(*dp, &v, "", "")["poolStatus"], "unknown");
  s = pool_status(*dp, nullptr, "Error", "no such disk");
  EXPECT_EQ(s, (json{{"state", "Error"}, {"reason", "no such disk"}, {"observedGeneration", 3}}));
}

TEST(DiskPool, StatusPatchClearsWhatIsGone) {
  json cur = {{"state", "Error"}, {"reason", "x"}, {"capacity", 5}};
  json want = {{"state", "Created"}, {"capacity", 5}};
  EXPECT_EQ(status_patch(cur, want), (json{{"status", {{"state", "Created"}, {"capacity", 5}, {"reason", nullptr}}}}));
  EXPECT_EQ(status_patch(json(), want), (json{{"status", want}}));
}

TEST(DiskPool, FinalizerPatchIsConditional) {
  json o = object({{"node", "n"}, {"disks", {"/d"}}});
  o["metadata"]["finalizers"] = {"other/x"};
  auto dp = parse_diskpool(o);
  ASSERT_TRUE(dp.ok());
  EXPECT_EQ(finalizer_patch(*dp, true),
            (json{{"metadata", {{"finalizers", {"other/x", std::string(kFinalizer)}}, {"resourceVersion", "42"}}}}));
  dp->finalizers.push_back(std::string(kFinalizer));
  EXPECT_EQ(finalizer_patch(*dp, false), (json{{"metadata", {{"finalizers", {"other/x"}}, {"resourceVersion", "42"}}}}));
}

TEST(DiskPool, PoolViewFromTheRestDocument) {
  json j = {{"name", "p"}, {"node", "n"}, {"disk", "uring:///d"}, {"labels", {{"a", "b"}}}, {"state", "created"},
            {"status", "online"}, {"replicas", 1}, {"capacity", 100}, {"used", 1}, {"committed", 2}};
  auto v = PoolView::FromJson(j);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->labels.at("a"), "b");
  EXPECT_EQ(*v->capacity, 100u);
  j.erase("node");
  EXPECT_EQ(PoolView::FromJson(j).code(), Errc::kInval);
}

TEST(WatchStream, LinesWhateverThePieces) {
  std::string stream = "{\"type\":\"ADDED\",\"object\":{}}\n\n{\"type\":\"BOOKMARK\",\"object\":{}}\r\n{\"ty";
  for (size_t cut = 1; cut < stream.size(); cut++) {
    LineSplitter s;
    std::vector<std::string> out;
    ASSERT_TRUE(s.feed(std::string_view(stream).substr(0, cut), out).ok());
    ASSERT_TRUE(s.feed(std::string_view(stream).substr(cut), out).ok());
    ASSERT_EQ(out.size(), 2u) << cut;
    EXPECT_EQ(out[1], "{\"type\":\"BOOKMARK\",\"object\":{}}");
    EXPECT_EQ(s.pending(), 4u);
  }
  LineSplitter small(8);
  std::vector<std::string> out;
  EXPECT_EQ(small.feed("0123456789", out).code(), Errc::kInval);
}

TEST(WatchStream, Events) {
  auto e = parse_watch_event(R"({"type":"MODIFIED","object":{"metadata":{"name":"a","resourceVersion":"7"}}})");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->type, "MODIFIED");
  EXPECT_EQ(e->resource_version, "7");
  e = parse_watch_event(R"({"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}})");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->code, 410);
  EXPECT_EQ(parse_watch_event("{").code(), Errc::kInval);
  EXPECT_EQ(parse_watch_event(R"({"object":{}})").code(), Errc::kInval);
  EXPECT_EQ(parse_watch_event(R"({"type":"ADDED"})").code(), Errc::kInval);
}

TEST(Url, Parses) {
  auto u = rest::Url::Parse("https://10.96.0.1:443", "80");
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "10.96.0.1");
  EXPECT_EQ(u->port, "443");
  u = rest::Url::Parse("http://[fd00::1]:6443/", "80");
  ASSERT_TRUE(u.ok());
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->host, "fd00::1");
  EXPECT_EQ(u->authority(), "[fd00::1]:6443");
  u = rest::Url::Parse("agent-0.tern", "8081");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->authority(), "agent-0.tern:8081");
  EXPECT_EQ(rest::Url::Parse("ftp://x", "1").code(), Errc::kInval);
  EXPECT_EQ(rest::Url::Parse("x:99999", "1").code(), Errc::kInval);
  EXPECT_EQ(rest::Url::Parse("x:http", "1").code(), Errc::kInval);
  EXPECT_EQ(rest::Url::Parse("[::1", "1").code(), Errc::kInval);
}
