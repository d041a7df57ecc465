#include "output.h"

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace tern::ctl {

void print_table(const std::vector<std::string>& headers, const std::vector<std::vector<std::string>>& rows,
                 const std::string& what) {
  if (rows.empty()) {
    fmt::print("No {}.\n", what);
    return;
  }
  std::vector<size_t> width(headers.size());
  for (size_t i = 0; i < headers.size(); ++i) width[i] = headers[i].size();
  for (auto& r : rows) {
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < cells.size(); ++i) {
      if (i + 1 == cells.size()) {
        out += cells[i];  // no trailing padding
      } else {
        out += fmt::format("{:<{}}  ", cells[i], width[i]);
      }
    }
    fmt::print("{}\n", out);
  };
  line(headers);
  for (auto& r : rows) line(r);
}

std::string to_json(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  o.always_print_enums_as_ints = false;
  std::string out;
  auto st = google::protobuf::util::MessageToJsonString(m, &out, o);
  if (!st.ok()) return fmt::format("{{\"error\": \"cannot print the reply as JSON: {}\"}}\n", st.ToString());
  return out;
}

namespace {

void emit(YAML::Emitter& y, const nlohmann::json& j) {
  if (j.is_object()) {
    y << YAML::BeginMap;
    for (auto& [k, v] : j.items()) {
      y << YAML::Key << k << YAML::Value;
      emit(y, v);
    }
    y << YAML::EndMap;
  } else if (j.is_array()) {
    y << YAML::BeginSeq;
    for (auto& v : j) emit(y, v);
    y << YAML::EndSeq;
  } else if (j.is_string()) {
    y << j.get<std::string>();
  } else if (j.is_boolean()) {
    y << j.get<bool>();
  } else if (j.is_number_integer() || j.is_number_unsigned()) {
    y << j.dump();
  } else if (j.is_number_float()) {
    y << j.get<double>();
  } else {
    y << YAML::Null;
  }
}

}  // namespace

std::string to_yaml(const google::protobuf::Message& m) {
  auto j = nlohmann::json::parse(to_json(m), nullptr, false);
  YAML::Emitter y;
  emit(y, j);
  return std::string(y.c_str()) + "\n";
}

void print_message(const google::protobuf::Message& m, Format f) {
  fmt::print("{}", f == Format::kYaml ? to_yaml(m) : to_json(m) + "\n");
}

}  // namespace tern::ctl
