// How ternctl prints engine replies: a table for people (default), JSON or YAML for scripts (the
// reply message with the API's field names, every field present).
#pragma once

#include <google/protobuf/message.h>

#include <functional>
#include <string>
#include <vector>

namespace tern::ctl {

enum class Format { kTable, kJson, kYaml };

// One table column: a header and how to get the cell from a row.
template <typename Row>
struct Column {
  std::string header;
  std::function<std::string(const Row&)> cell;
};

// Prints rows as an aligned table ("No <what>." when there are none).
void print_table(const std::vector<std::string>& headers, const std::vector<std::vector<std::string>>& rows,
                 const std::string& what);

template <typename Row, typename Container>
void print_rows(const std::vector<Column<Row>>& cols, const Container& rows, const std::string& what) {
  std::vector<std::string> headers;
  for (auto& c : cols) headers.push_back(c.header);
  std::vector<std::vector<std::string>> cells;
  for (const Row& r : rows) {
    std::vector<std::string> line;
    for (auto& c : cols) line.push_back(c.cell(r));
    cells.push_back(std::move(line));
  }
  print_table(headers, cells, what);
}

// The message as JSON (field names as in the .proto, defaults included) or YAML.
std::string to_json(const google::protobuf::Message& m);
std::string to_yaml(const google::protobuf::Message& m);
void print_message(const google::protobuf::Message& m, Format f);

}  // namespace tern::ctl
