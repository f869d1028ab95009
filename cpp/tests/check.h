// The C++ tests' checks (no framework): CHECK counts a failure and names the line; CHECK_THROWS expects a
// vitedge::Error whose message contains a needle. The test's exit code is `failures`. Test executables only.
#pragma once

#include <functional>
#include <iostream>
#include <string>

#include "vitedge/runner.h"

namespace vitedge_test {

inline int failures = 0;

// Expect fn() to throw vitedge::Error whose message contains `needle`.
inline void check_throws(const std::function<void()>& fn, const std::string& needle, int line) {
  try {
    fn();
  } catch (const vitedge::Error& e) {
    if (std::string(e.what()).find(needle) == std::string::npos) {
      ++failures;
      std::cerr << "line " << line << ": message '" << e.what() << "' lacks '" << needle << "'\n";
    }
    return;
  } catch (const std::exception& e) {
    ++failures;
    std::cerr << "line " << line << ": threw a non-vitedge exception: " << e.what() << "\n";
    return;
  }
  ++failures;
  std::cerr << "line " << line << ": expected vitedge::Error containing '" << needle << "'\n";
}

}  // namespace vitedge_test

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      ++vitedge_test::failures;                                                      \
      std::cerr << __FILE__ << ":" << __LINE__ << ": CHECK(" #cond ") failed\n";     \
    }                                                                                \
  } while (0)

#define CHECK_THROWS(expr, needle) vitedge_test::check_throws([&] { (void)(expr); }, needle, __LINE__)
