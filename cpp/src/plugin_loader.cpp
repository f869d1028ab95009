// Backend plugins: find, dlopen (RTLD_LOCAL) and check libvitedge_backend_<name>.so. See plugin.h for why.
#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>

#include "plugin.h"

namespace vitedge {
namespace fs = std::filesystem;

namespace {

std::string first_line(const char* s) {
  std::string t = s ? s : "unknown error";
  const auto nl = t.find('\n');
  return nl == std::string::npos ? t : t.substr(0, nl);
}

// The folder holding this library (libvitedge.so, or the executable for a static build).
std::string core_dir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&core_dir), &info) == 0 || info.dli_fname == nullptr) return "";
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::path(info.dli_fname), ec);
  if (ec) p = fs::path(info.dli_fname);
  return p.parent_path().string();
}

}  // namespace

std::vector<std::string> backend_dirs(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("VITEDGE_BACKEND_DIR"); env != nullptr && *env != '\0')
    dirs.push_back((fs::path(env) / name).string());
  const std::string core = core_dir();
  if (!core.empty()) dirs.push_back((fs::path(core) / "vitedge" / "backends" / name).string());
  return dirs;
}

BackendFactory plugin_factory(const std::string& name, const std::string& target, const std::string& backend) {
  static std::mutex mutex;
  // plugin name -> its checked factory entry point; the library is never dlclose'd (backends live on)
  static std::map<std::string, vitedge_plugin_factory_fn> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  const std::string file = "libvitedge_backend_" + name + ".so";
  vitedge_plugin_factory_fn factory = nullptr;
  if (auto it = loaded.find(name); it != loaded.end()) {
    factory = it->second;
  } else {
    void* handle = nullptr;
    std::string where;
    std::string tried;
    for (const std::string& dir : backend_dirs(name)) {
      const std::string path = (fs::path(dir) / file).string();
      std::error_code ec;
      if (!fs::is_regular_file(path, ec)) {
        tried += (tried.empty() ? "" : ", ") + path;
        continue;
      }
      dlerror();
      handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr)
        throw Error("cannot load the " + name + " backend plugin " + path + ": " + first_line(dlerror()) +
                    " (not a loadable library, or a runtime library it needs is missing)");
      where = path;
      break;
    }
    if (handle == nullptr)
      throw Error("the " + name + " backend plugin (" + file + ") was not found; looked for " + tried +
                  ". Install it with libvitedge (cmake --install puts it in lib/vitedge/backends/" + name +
                  "/) or set VITEDGE_BACKEND_DIR to the folder holding " + name + "/" + file);
    auto abi = reinterpret_cast<vitedge_plugin_abi_key_fn>(dlsym(handle, "vitedge_plugin_abi_key"));
    factory = reinterpret_cast<vitedge_plugin_factory_fn>(dlsym(handle, "vitedge_plugin_factory"));
    if (abi == nullptr || factory == nullptr)
      throw Error(where + " is not a vitedge backend plugin (no vitedge_plugin_abi_key / vitedge_plugin_factory)");
    const std::string theirs = abi(), ours = plugin_abi_key();
    if (theirs != ours)
      throw Error(where + " was built for another vitedge (plugin ABI '" + theirs + "', this library '" + ours +
                  "'); install the plugin built with this libvitedge");
    loaded.emplace(name, factory);
  }
  BackendFactory make = factory(target.c_str(), backend.c_str());
  if (make == nullptr)
    throw Error("the " + name + " backend plugin does not provide backend '" + backend + "' for target '" + target + "'");
  return make;
}

}  // namespace vitedge
