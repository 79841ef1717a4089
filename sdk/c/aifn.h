/* aifn C SDK: write a function's preprocessing (and optional postprocessing) in C.
 *
 *   #include "aifn.h"
 *
 *   bool aifn_preprocess(const aifn_request *req, aifn_tensors *out, aifn_error *err) {
 *       aifn_bytes body = aifn_body(req);
 *       if (body.len == 0) return aifn_bad_request(err, "send a body");
 *       const uint32_t shape[2] = {1, 1};
 *       const float x[1] = {(float)body.len};
 *       return aifn_push_f32(out, "x", shape, 2, x, 1);
 *   }
 *
 * Build with `sdk/c/build.sh OUT.wasm your.c` (clang for wasm32-wasi, the bindings that wit-bindgen
 * generates from spec/wit, and wasm-tools to make the component). Every request runs in a fresh
 * instance, so memory you allocate is gone with the request: no need to free it.
 */
#ifndef AIFN_H
#define AIFN_H

#include "function.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef function_request_t aifn_request;
typedef function_list_tensor_t aifn_tensors;
typedef function_tensor_t aifn_tensor;
typedef function_error_t aifn_error;
typedef function_response_t aifn_response;

/* A view of bytes owned by the request or a tensor. */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} aifn_bytes;

/* ---- what you write ---- */

/* Required: turn the request into the model's named input tensors (push them onto `out`), and
 * return true; or set `err` (aifn_bad_request / aifn_internal) and return false. */
bool aifn_preprocess(const aifn_request *req, aifn_tensors *out, aifn_error *err);

typedef enum {
    AIFN_HOST_ANSWERS = 0, /* the host answers with the outputs as Open Inference Protocol v2 JSON */
    AIFN_ANSWERED = 1,     /* `response` is the answer (see aifn_respond) */
    AIFN_FAILED = 2,       /* `err` says why */
} aifn_outcome;

/* Optional (a weak default lets the host answer): turn the model's outputs into the response. */
aifn_outcome aifn_postprocess(const aifn_request *req, const aifn_tensors *outputs,
                              aifn_response *response, aifn_error *err) __attribute__((weak));

/* ---- the request ---- */

aifn_bytes aifn_body(const aifn_request *req);
/* A header's value (names match case-insensitively); `found` false when absent. */
aifn_bytes aifn_header(const aifn_request *req, const char *name, bool *found);

/* ---- tensors ---- */

/* Append a tensor (name, shape of `ndim` dimensions, `n` elements copied from `data`) to `out`.
 * Return false if memory runs out (the host then reports the module out of memory). */
bool aifn_push_f32(aifn_tensors *out, const char *name, const uint32_t *shape, size_t ndim,
                   const float *data, size_t n);
bool aifn_push_f64(aifn_tensors *out, const char *name, const uint32_t *shape, size_t ndim,
                   const double *data, size_t n);
bool aifn_push_i32(aifn_tensors *out, const char *name, const uint32_t *shape, size_t ndim,
                   const int32_t *data, size_t n);
bool aifn_push_i64(aifn_tensors *out, const char *name, const uint32_t *shape, size_t ndim,
                   const int64_t *data, size_t n);
bool aifn_push_u8(aifn_tensors *out, const char *name, const uint32_t *shape, size_t ndim,
                  const uint8_t *data, size_t n);

/* The output named `name`, or NULL. */
const aifn_tensor *aifn_output(const aifn_tensors *outputs, const char *name);
/* A tensor's f32 elements (NULL, 0 if it holds another type). */
const float *aifn_f32s(const aifn_tensor *tensor, size_t *n);

/* ---- answers and errors ---- */

/* Fill `response` (the body is copied). */
void aifn_respond(aifn_response *response, uint16_t status, const char *content_type,
                  const uint8_t *body, size_t len);
/* Set `err`: the caller's fault (HTTP 400) or the function's (HTTP 500). Both return false. */
bool aifn_bad_request(aifn_error *err, const char *message);
bool aifn_internal(aifn_error *err, const char *message);

/* ---- logging into the host's log, tagged with the function's name and version ---- */

void aifn_log_info(const char *message);
void aifn_log_warn(const char *message);
void aifn_log_error(const char *message);

#endif
