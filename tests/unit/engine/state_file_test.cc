#include "engine/state_file.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace tern::engine {
namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/tern-state-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

TEST(StateFile, MissingFileIsEmptyAndRoundTrips) {
  TempDir d;
  StateFile f(d.path + "/sub");  // created on first save
  auto empty = f.load();
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_TRUE(empty->empty());
  ASSERT_TRUE(f.save({{"p0", "uring:///dev/sdb"}, {"p1", "uring:///var/lib/x.img"}}).ok());
  auto back = f.load();
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[0].name, "p0");
  EXPECT_EQ((*back)[1].disk, "uring:///var/lib/x.img");
  // Replaced, not appended; no temporary left behind.
  ASSERT_TRUE(f.save({}).ok());
  EXPECT_TRUE(f.load()->empty());
  EXPECT_FALSE(std::filesystem::exists(f.path() + ".tmp"));
}

TEST(StateFile, DamagedFileIsAnErrorNamingIt) {
  TempDir d;
  StateFile f(d.path);
  for (const char* text : {"{not json", "[]", "{\"pools\": 3}", "{\"pools\": [{\"name\": \"p\"}]}",
                           "{\"pools\": [{\"name\": 1, \"disk\": \"x\"}]}"}) {
    std::ofstream(f.path()) << text;
    auto r = f.load();
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.code(), Errc::kCorruption) << text;
    EXPECT_NE(r.status().ToString().find(f.path()), std::string::npos) << r.status().ToString();
  }
}

TEST(StateFile, EmptyDirectoryKeepsNothing) {
  StateFile f("");
  EXPECT_TRUE(f.save({{"p", "d"}}).ok());
  EXPECT_TRUE(f.load()->empty());
}

}  // namespace
}  // namespace tern::engine
