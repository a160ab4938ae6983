#include "sft/train/tfevents.h"

#include <unistd.h>

#include <array>
#include <cstring>
#include <ctime>

#include "sft/util/error.h"
#include "sft/util/fs.h"
#include "sft/util/safe_io.h"

namespace sft::train {
namespace {

std::array<std::uint32_t, 256> make_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;  // Castagnoli, reflected
    t[i] = c;
  }
  return t;
}

void varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void fixed(std::string& out, const void* p, std::size_t n) { out.append(static_cast<const char*>(p), n); }

void bytes_field(std::string& out, int field, std::string_view s) {
  varint(out, (static_cast<std::uint64_t>(field) << 3) | 2);
  varint(out, s.size());
  out.append(s);
}

// Event{wall_time=1 (double), step=2 (int64), file_version=3 | summary=5}
std::string event(double wall, std::int64_t step, const std::string* file_version,
                  const std::string* summary) {
  std::string e;
  varint(e, (1 << 3) | 1);
  fixed(e, &wall, 8);
  varint(e, (2 << 3) | 0);
  varint(e, static_cast<std::uint64_t>(step));
  if (file_version) bytes_field(e, 3, *file_version);
  if (summary) bytes_field(e, 5, *summary);
  return e;
}

}  // namespace

std::uint32_t crc32c(const void* data, std::size_t n) {
  static const auto table = make_table();
  std::uint32_t c = 0xffffffffu;
  const auto* p = static_cast<const std::uint8_t*>(data);
  for (std::size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

std::uint32_t masked_crc32c(const void* data, std::size_t n) {
  std::uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

TfEventsWriter::TfEventsWriter(const std::string& dir) {
  fs::make_dirs(dir);
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  path_ = fs::join(dir, "events.out.tfevents." + std::to_string(std::time(nullptr)) + "." + host);
  // A file of its own: appended to if this second's file exists (a restart), never through a link.
  f_ = ::fdopen(fs::open_append(path_), "ab");
  if (!f_) throw Error(path_ + ": cannot create the TensorBoard event file");
  std::string version = "brain.Event:2";
  write_record(event(static_cast<double>(std::time(nullptr)), 0, &version, nullptr));
  flush();
}

TfEventsWriter::~TfEventsWriter() {
  if (f_) std::fclose(f_);
}

void TfEventsWriter::write_record(const std::string& payload) {
  std::uint64_t len = payload.size();
  std::uint32_t len_crc = masked_crc32c(&len, 8), data_crc = masked_crc32c(payload.data(), payload.size());
  std::fwrite(&len, 8, 1, f_);
  std::fwrite(&len_crc, 4, 1, f_);
  std::fwrite(payload.data(), 1, payload.size(), f_);
  std::fwrite(&data_crc, 4, 1, f_);
}

void TfEventsWriter::scalar(const std::string& tag, double value, std::int64_t step, double wall_time) {
  // Summary{value=1: Value{tag=1 (string), simple_value=2 (float)}}
  std::string v;
  bytes_field(v, 1, tag);
  float fv = static_cast<float>(value);
  varint(v, (2 << 3) | 5);
  fixed(v, &fv, 4);
  std::string summary;
  bytes_field(summary, 1, v);
  write_record(event(wall_time, step, nullptr, &summary));
}

void TfEventsWriter::flush() { std::fflush(f_); }

namespace {

struct Reader {
  const std::string& s;
  std::size_t i;
  std::size_t end;
  std::uint64_t varint() {
    std::uint64_t v = 0;
    int shift = 0;
    while (i < end) {
      auto b = static_cast<std::uint8_t>(s[i++]);
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      shift += 7;
    }
    throw Error("truncated varint");
  }
};

}  // namespace

std::vector<ScalarEvent> read_scalar_events(const std::string& path) {
  std::string data = fs::read_file(path);
  std::vector<ScalarEvent> out;
  std::size_t pos = 0;
  while (pos < data.size()) {
    if (pos + 12 > data.size()) throw Error(path + ": truncated record header");
    std::uint64_t len;
    std::uint32_t lcrc;
    std::memcpy(&len, data.data() + pos, 8);
    std::memcpy(&lcrc, data.data() + pos + 8, 4);
    if (lcrc != masked_crc32c(data.data() + pos, 8)) throw Error(path + ": bad length CRC");
    if (pos + 12 + len + 4 > data.size()) throw Error(path + ": truncated record");
    const std::size_t body = pos + 12;
    std::uint32_t dcrc;
    std::memcpy(&dcrc, data.data() + body + len, 4);
    if (dcrc != masked_crc32c(data.data() + body, len)) throw Error(path + ": bad data CRC");
    Reader r{data, body, body + len};
    std::int64_t step = 0;
    std::string summary;
    while (r.i < r.end) {
      std::uint64_t key = r.varint();
      int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
      if (wire == 0) {
        std::uint64_t v = r.varint();
        if (field == 2) step = static_cast<std::int64_t>(v);
      } else if (wire == 1) {
        r.i += 8;
      } else if (wire == 5) {
        r.i += 4;
      } else if (wire == 2) {
        std::uint64_t n = r.varint();
        if (field == 5) summary = data.substr(r.i, n);
        r.i += n;
      } else {
        throw Error(path + ": unexpected wire type");
      }
    }
    if (!summary.empty()) {
      Reader sr{summary, 0, summary.size()};
      while (sr.i < sr.end) {
        std::uint64_t key = sr.varint();
        std::uint64_t n = sr.varint();
        if ((key >> 3) == 1) {
          Reader vr{summary, sr.i, sr.i + n};
          ScalarEvent ev{"", 0.f, step};
          while (vr.i < vr.end) {
            std::uint64_t k = vr.varint();
            if ((k & 7) == 2) {
              std::uint64_t m = vr.varint();
              if ((k >> 3) == 1) ev.tag = summary.substr(vr.i, m);
              vr.i += m;
            } else if ((k & 7) == 5) {
              std::memcpy(&ev.value, summary.data() + vr.i, 4);
              vr.i += 4;
            } else {
              vr.varint();
            }
          }
          out.push_back(ev);
        }
        sr.i += n;
      }
    }
    pos = body + len + 4;
  }
  return out;
}

}  // namespace sft::train
