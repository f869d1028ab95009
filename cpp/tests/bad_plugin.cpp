// Test-only stand-ins for a backend plugin (cpp_plugins): built as libvitedge_backend_torch.so in test folders.
//   -DVITEDGE_BAD_PLUGIN_ABI: exports the plugin symbols but reports another ABI key (a plugin of another build)
//   otherwise: a shared library that exports neither symbol (not a vitedge plugin)
#include "plugin.h"

#ifdef VITEDGE_BAD_PLUGIN_ABI
extern "C" __attribute__((visibility("default"))) const char* vitedge_plugin_abi_key() {
  return "vitedge-backend-plugin/1 version=0.0.0-other";
}
extern "C" __attribute__((visibility("default"))) vitedge::BackendFactory vitedge_plugin_factory(const char*, const char*) {
  return nullptr;
}
#else
extern "C" __attribute__((visibility("default"))) int some_other_library_function() { return 42; }
#endif
