// Our own minimal declarations of the ONNX Runtime C API, written for vitedge (not copied from ORT).
//
// Why: no package we can install ships ORT's headers (checked: PyPI wheels, npm, Debian), so the backend opens the shared library
// of the `onnxruntime` wheel with dlopen and calls the C API through these declarations.
//
// Source: the documented C API, `onnxruntime_c_api.h` as published by the ONNX Runtime project (struct OrtApi,
// ORT_API_VERSION 13, i.e. ONNX Runtime 1.13). OrtApi is a struct of function pointers whose order is part of
// ORT's ABI: entries are only ever appended, never removed or reordered, so a library of a later version
// returns a struct whose first entries are these. `OrtApiBase::GetApi(v)` returns nullptr when the library is
// older than API version v. Every slot this file names is at its documented 0-based position (asserted below);
// the slots we do not use are opaque `void*` placeholders. onnxruntime_backend.cpp additionally checks at load
// time, by calling them with known answers, that the positions are right for the library it opened.
//
// Conventions of the API (from its documentation): functions returning OrtStatus* return nullptr on success;
// a non-null status holds an error code and message and must be released with ReleaseStatus. Objects created
// by Create* are released with the matching Release*. On Linux ORTCHAR_T is char and the calling convention is
// the platform's default; C enums are passed as int.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vitedge {
namespace ort {

/// The C API version whose OrtApi layout this file follows (positions 0..130 used).
constexpr uint32_t kApiVersion = 13;
/// The first ONNX Runtime release exposing that API version (ORT 1.N exposes API version N).
constexpr int kMinMajor = 1, kMinMinor = 13;

// Opaque handles (the library owns their layout).
struct Env;
struct Status;
struct MemoryInfo;
struct Session;
struct Value;
struct RunOptions;
struct TensorTypeAndShapeInfo;
struct SessionOptions;

/// OrtAllocator: a public struct of its own (version, then Alloc / Free / Info function pointers).
/// We only pass pointers to it back to the library (AllocatorFree), so its members stay opaque here.
struct Allocator;

// Values of the documented enums we pass or compare.
enum LoggingLevel : int { kLogVerbose = 0, kLogInfo = 1, kLogWarning = 2, kLogError = 3, kLogFatal = 4 };
enum ErrorCode : int { kOk = 0, kFail = 1, kInvalidArgument = 2 };
enum ElementType : int { kUndefined = 0, kFloat = 1, kUint8 = 2, kInt8 = 3, kFloat16 = 10, kDouble = 11 };
enum GraphOptimizationLevel : int { kDisableAll = 0, kEnableBasic = 1, kEnableExtended = 2, kEnableAll = 99 };
enum AllocatorType : int { kDeviceAllocator = 0, kArenaAllocator = 1 };
enum MemType : int { kMemTypeDefault = 0 };

using StatusPtr = Status*;

/// OrtApiBase, returned by the exported `OrtGetApiBase()`.
struct ApiBase {
  const void* (*GetApi)(uint32_t version);  // really `const OrtApi*`; we cast to our Api below
  const char* (*GetVersionString)();
};
using GetApiBaseFn = const ApiBase* (*)();

/// The first 131 entries of OrtApi (ORT_API_VERSION 13 layout).
struct Api {
  StatusPtr (*CreateStatus)(int code, const char* msg);                        // 0
  int (*GetErrorCode)(const Status* status);                                   // 1
  const char* (*GetErrorMessage)(const Status* status);                        // 2
  StatusPtr (*CreateEnv)(int log_severity_level, const char* logid, Env** out);  // 3
  void* unused_4_6[3];  // CreateEnvWithCustomLogger, EnableTelemetryEvents, DisableTelemetryEvents
  StatusPtr (*CreateSession)(const Env* env, const char* model_path, const SessionOptions* options,
                             Session** out);  // 7
  StatusPtr (*CreateSessionFromArray)(const Env* env, const void* model_data, size_t model_data_length,
                                     const SessionOptions* options, Session** out);  // 8
  StatusPtr (*Run)(Session* session, const RunOptions* run_options, const char* const* input_names,
                   const Value* const* inputs, size_t input_len, const char* const* output_names,
                   size_t output_names_len, Value** outputs);  // 9
  StatusPtr (*CreateSessionOptions)(SessionOptions** out);     // 10
  // SetOptimizedModelFilePath, CloneSessionOptions, SetSessionExecutionMode, EnableProfiling, DisableProfiling,
  // EnableMemPattern, DisableMemPattern, EnableCpuMemArena, DisableCpuMemArena, SetSessionLogId,
  // SetSessionLogVerbosityLevel
  void* unused_11_21[11];
  StatusPtr (*SetSessionLogSeverityLevel)(SessionOptions* options, int level);                     // 22
  StatusPtr (*SetSessionGraphOptimizationLevel)(SessionOptions* options, int level);               // 23
  StatusPtr (*SetIntraOpNumThreads)(SessionOptions* options, int intra_op_num_threads);            // 24
  StatusPtr (*SetInterOpNumThreads)(SessionOptions* options, int inter_op_num_threads);            // 25
  void* unused_26_29[4];  // CreateCustomOpDomain, CustomOpDomain_Add, AddCustomOpDomain, RegisterCustomOpsLibrary
  StatusPtr (*SessionGetInputCount)(const Session* session, size_t* out);                          // 30
  StatusPtr (*SessionGetOutputCount)(const Session* session, size_t* out);                         // 31
  void* unused_32_35[4];  // SessionGetOverridableInitializerCount, Session{Input,Output,OverridableInitializer}TypeInfo
  StatusPtr (*SessionGetInputName)(const Session* session, size_t index, Allocator* allocator, char** value);   // 36
  StatusPtr (*SessionGetOutputName)(const Session* session, size_t index, Allocator* allocator, char** value);  // 37
  // SessionGetOverridableInitializerName, CreateRunOptions, RunOptionsSetRunLogVerbosityLevel,
  // RunOptionsSetRunLogSeverityLevel, RunOptionsSetRunTag, RunOptionsGetRunLogVerbosityLevel,
  // RunOptionsGetRunLogSeverityLevel, RunOptionsGetRunTag, RunOptionsSetTerminate, RunOptionsUnsetTerminate,
  // CreateTensorAsOrtValue
  void* unused_38_48[11];
  StatusPtr (*CreateTensorWithDataAsOrtValue)(const MemoryInfo* info, void* p_data, size_t p_data_len,
                                              const int64_t* shape, size_t shape_len, int type,
                                              Value** out);  // 49
  StatusPtr (*IsTensor)(const Value* value, int* out);          // 50
  StatusPtr (*GetTensorMutableData)(Value* value, void** out);  // 51
  // FillStringTensor, GetStringTensorDataLength, GetStringTensorContent, CastTypeInfoToTensorInfo,
  // GetOnnxTypeFromTypeInfo
  void* unused_52_56[5];
  StatusPtr (*CreateTensorTypeAndShapeInfo)(TensorTypeAndShapeInfo** out);                             // 57
  StatusPtr (*SetTensorElementType)(TensorTypeAndShapeInfo* info, int type);                           // 58
  StatusPtr (*SetDimensions)(TensorTypeAndShapeInfo* info, const int64_t* dim_values, size_t dim_count);  // 59
  StatusPtr (*GetTensorElementType)(const TensorTypeAndShapeInfo* info, int* out);                     // 60
  StatusPtr (*GetDimensionsCount)(const TensorTypeAndShapeInfo* info, size_t* out);                    // 61
  StatusPtr (*GetDimensions)(const TensorTypeAndShapeInfo* info, int64_t* dim_values, size_t length);  // 62
  void* unused_63;  // GetSymbolicDimensions
  StatusPtr (*GetTensorShapeElementCount)(const TensorTypeAndShapeInfo* info, size_t* out);            // 64
  StatusPtr (*GetTensorTypeAndShape)(const Value* value, TensorTypeAndShapeInfo** out);                // 65
  void* unused_66_68[3];  // GetTypeInfo, GetValueType, CreateMemoryInfo
  StatusPtr (*CreateCpuMemoryInfo)(int allocator_type, int mem_type, MemoryInfo** out);               // 69
  void* unused_70;  // CompareMemoryInfo
  StatusPtr (*MemoryInfoGetName)(const MemoryInfo* info, const char** out);                           // 71
  StatusPtr (*MemoryInfoGetId)(const MemoryInfo* info, int* out);                                     // 72
  StatusPtr (*MemoryInfoGetMemType)(const MemoryInfo* info, int* out);                                // 73
  StatusPtr (*MemoryInfoGetType)(const MemoryInfo* info, int* out);                                   // 74
  StatusPtr (*AllocatorAlloc)(Allocator* allocator, size_t size, void** out);                         // 75
  StatusPtr (*AllocatorFree)(Allocator* allocator, void* p);                                          // 76
  void* unused_77;  // AllocatorGetInfo
  StatusPtr (*GetAllocatorWithDefaultOptions)(Allocator** out);                                       // 78
  // AddFreeDimensionOverride, GetValue, GetValueCount, CreateValue, CreateOpaqueValue, GetOpaqueValue,
  // KernelInfoGetAttribute_{float,int64,string}, KernelContext_{GetInputCount,GetOutputCount,GetInput,GetOutput}
  void* unused_79_91[13];
  void (*ReleaseEnv)(Env* p);                                        // 92
  void (*ReleaseStatus)(Status* p);                                  // 93
  void (*ReleaseMemoryInfo)(MemoryInfo* p);                          // 94
  void (*ReleaseSession)(Session* p);                                // 95
  void (*ReleaseValue)(Value* p);                                    // 96
  void* unused_97_98[2];  // ReleaseRunOptions, ReleaseTypeInfo
  void (*ReleaseTensorTypeAndShapeInfo)(TensorTypeAndShapeInfo* p);  // 99
  void (*ReleaseSessionOptions)(SessionOptions* p);                  // 100
  // ReleaseCustomOpDomain, GetDenotationFromTypeInfo, CastTypeInfoToMapTypeInfo, CastTypeInfoToSequenceTypeInfo,
  // GetMapKeyType, GetMapValueType, GetSequenceElementType, ReleaseMapTypeInfo, ReleaseSequenceTypeInfo,
  // SessionEndProfiling, SessionGetModelMetadata, ModelMetadataGet{ProducerName,GraphName,Domain,Description},
  // ModelMetadataLookupCustomMetadataMap, ModelMetadataGetVersion, ReleaseModelMetadata,
  // CreateEnvWithGlobalThreadPools, DisablePerSessionThreads, CreateThreadingOptions, ReleaseThreadingOptions,
  // ModelMetadataGetCustomMetadataMapKeys, AddFreeDimensionOverrideByName, GetAvailableProviders,
  // ReleaseAvailableProviders, GetStringTensorElementLength, GetStringTensorElement, FillStringTensorElement
  void* unused_101_129[29];
  StatusPtr (*AddSessionConfigEntry)(SessionOptions* options, const char* config_key,
                                     const char* config_value);  // 130
};

// Our declaration must put each entry at its documented index (one pointer per slot).
#define VITEDGE_ORT_SLOT(member, index) \
  static_assert(offsetof(Api, member) == (index) * sizeof(void*), "OrtApi slot " #member " is not at " #index)
VITEDGE_ORT_SLOT(CreateStatus, 0);
VITEDGE_ORT_SLOT(GetErrorMessage, 2);
VITEDGE_ORT_SLOT(CreateEnv, 3);
VITEDGE_ORT_SLOT(CreateSession, 7);
VITEDGE_ORT_SLOT(Run, 9);
VITEDGE_ORT_SLOT(CreateSessionOptions, 10);
VITEDGE_ORT_SLOT(SetSessionLogSeverityLevel, 22);
VITEDGE_ORT_SLOT(SetInterOpNumThreads, 25);
VITEDGE_ORT_SLOT(SessionGetInputCount, 30);
VITEDGE_ORT_SLOT(SessionGetInputName, 36);
VITEDGE_ORT_SLOT(SessionGetOutputName, 37);
VITEDGE_ORT_SLOT(CreateTensorWithDataAsOrtValue, 49);
VITEDGE_ORT_SLOT(GetTensorMutableData, 51);
VITEDGE_ORT_SLOT(CreateTensorTypeAndShapeInfo, 57);
VITEDGE_ORT_SLOT(GetDimensions, 62);
VITEDGE_ORT_SLOT(GetTensorShapeElementCount, 64);
VITEDGE_ORT_SLOT(GetTensorTypeAndShape, 65);
VITEDGE_ORT_SLOT(CreateCpuMemoryInfo, 69);
VITEDGE_ORT_SLOT(MemoryInfoGetType, 74);
VITEDGE_ORT_SLOT(AllocatorFree, 76);
VITEDGE_ORT_SLOT(GetAllocatorWithDefaultOptions, 78);
VITEDGE_ORT_SLOT(ReleaseEnv, 92);
VITEDGE_ORT_SLOT(ReleaseValue, 96);
VITEDGE_ORT_SLOT(ReleaseTensorTypeAndShapeInfo, 99);
VITEDGE_ORT_SLOT(ReleaseSessionOptions, 100);
VITEDGE_ORT_SLOT(AddSessionConfigEntry, 130);
#undef VITEDGE_ORT_SLOT
static_assert(sizeof(Api) == 131 * sizeof(void*), "OrtApi prefix must hold exactly 131 slots");

}  // namespace ort
}  // namespace vitedge
