// AOTInductor backend (libtorch): a .pt2 package from torch._inductor.aoti_compile_and_package, run by
// torch::inductor::AOTIModelPackageLoader (the loader extracts the compiled model library to a temp dir).
// Thread safety: the loader's model container hands each run() a free model instance and makes concurrent
// callers wait for one (one instance here), so run() may be called from several threads; the runs are serialized.
// Loading is not thread-safe in libtorch: its package loader parses the package's JSON files into one
// function-local static nlohmann::json (load_json_file in model_package_loader.cpp), so two threads opening
// packages at once could read each other's half-parsed metadata ("type must be string, but is null", seen in CI
// in cpp_threads). Every libtorch package-loading call here holds one process-wide mutex.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/version.h>  // TORCH_VERSION_MAJOR/MINOR: device_of_package

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>

#include "backend.h"
#include "torch_common.h"

namespace vitedge {
namespace {

using torch_common::first_line;

// Held around every AOTIModelPackageLoader construction / metadata read (see the note at the top).
std::mutex& package_load_mutex() {
  static std::mutex m;
  return m;
}

// A private directory (mkdtemp, mode 0700) holding the verified copy of the package; removed with its contents
// when this object goes (on a failed load too).
class PrivateCopy {
 public:
  PrivateCopy(const std::string& bytes, const std::string& origin) {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/vitedge-aoti-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr)
      throw Error("cannot create a private temporary directory for " + origin + ": " + std::strerror(errno));
    dir_ = buf.data();
    file_ = dir_ + "/model.pt2";
    const int fd = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      const int e = errno;
      remove_all();
      throw Error("cannot write the verified copy of " + origin + ": " + std::strerror(e));
    }
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int e = errno;
        ::close(fd);
        remove_all();
        throw Error("cannot write the verified copy of " + origin + ": " + std::strerror(e));
      }
      done += static_cast<size_t>(n);
    }
    ::close(fd);
  }
  ~PrivateCopy() { remove_all(); }
  PrivateCopy(const PrivateCopy&) = delete;
  PrivateCopy& operator=(const PrivateCopy&) = delete;
  const std::string& file() const { return file_; }

 private:
  void remove_all() {
    if (dir_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_, file_;
};

class AOTInductorBackend final : public Backend {
 public:
  AOTInductorBackend(ModelSource& source, const Options& options)
      : path_(source.path), device_(torch_common::torch_device(options)),
        copy_(std::make_unique<PrivateCopy>(source.bytes, source.path)) {
    // libtorch's loader takes a path only: it reads the verified copy in our private 0700 directory, never the
    // artifact folder (a file swapped there after the check is not loaded).
    const std::lock_guard<std::mutex> lock(package_load_mutex());
    std::string compiled_for;
    try {
      torch_common::set_threads(options);
      compiled_for = device_of_package(copy_->file());
    } catch (const c10::Error& e) {
      throw Error("cannot load AOTInductor package " + path_ + ": " + first_line(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      throw Error("cannot load AOTInductor package " + path_ + ": " + first_line(e.what()));
    }
    if (compiled_for != c10::DeviceTypeName(device_.type(), /*lower_case=*/true))
      throw Error("AOTInductor package " + path_ + " was compiled for device '" + compiled_for +
                  "' but the runner was opened with device '" + options.device + "'; re-export it for that device "
                  "or open it with device " + compiled_for);
    try {
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          copy_->file(), "model", /*run_single_threaded=*/false, /*num_runners=*/1,
          static_cast<c10::DeviceIndex>(device_.has_index() ? device_.index() : -1));
    } catch (const c10::Error& e) {
      throw Error("cannot load AOTInductor package " + path_ + ": " + first_line(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      throw Error("cannot load AOTInductor package " + path_ + ": " + first_line(e.what()));
    }
  }

  std::string runtime() const override { return "aotinductor"; }

  std::vector<Tensor> run(const Tensor& input) override {
    try {
      c10::InferenceMode guard;
      return torch_common::to_outputs(loader_->run({torch_common::input_tensor(input, device_)}));
    } catch (const c10::Error& e) {
      throw Error("AOTInductor failed running " + path_ + ": " + first_line(e.what_without_backtrace()));
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error("AOTInductor failed running " + path_ + ": " + first_line(e.what()));
    }
  }

  std::vector<double> time_native(const Tensor& input, int warmup, int iters) override {
    try {
      c10::InferenceMode guard;
      const std::vector<at::Tensor> args{torch_common::input_tensor(input, device_)};
      for (int i = 0; i < warmup; ++i) loader_->run(args);
      std::vector<double> ms;
      ms.reserve(iters);
      for (int i = 0; i < iters; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<at::Tensor> out = loader_->run(args);
        if (device_.is_cuda()) torch::cuda::synchronize();
        const auto t1 = std::chrono::steady_clock::now();
        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
      return ms;
    } catch (const c10::Error& e) {
      throw Error("AOTInductor failed running " + path_ + ": " + first_line(e.what_without_backtrace()));
    }
  }

 private:
  // "cpu" or "cuda": the device the package's model library was compiled for (package metadata).
  static std::string device_of_package(const std::string& path) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 13)
    const auto meta = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model");
#else
    // Older libtorch (checked: 2.9.1, the newest CPU-only aarch64 wheel, used by scripts/arm64_qemu.sh) has no
    // static metadata reader: read it through a loader on the default device (a package compiled for another
    // device fails here with libtorch's own message).
    const auto meta = torch::inductor::AOTIModelPackageLoader(path, "model").get_metadata();
#endif
    const auto it = meta.find("AOTI_DEVICE_KEY");
    if (it == meta.end()) throw Error("the package metadata names no device (AOTI_DEVICE_KEY)");
    return it->second;
  }

  std::string path_;
  c10::Device device_;
  std::unique_ptr<PrivateCopy> copy_;  // declared before loader_: removed after the loader is gone
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
};

}  // namespace

std::unique_ptr<Backend> make_aotinductor_backend(const Manifest& /*manifest*/, ModelSource& source,
                                                  const Options& options) {
  return std::make_unique<AOTInductorBackend>(source, options);
}

}  // namespace vitedge
