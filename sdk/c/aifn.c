/* aifn C SDK: the component's exports, which call aifn_preprocess / aifn_postprocess, and the
 * helpers of aifn.h over the bindings that wit-bindgen generates (function.h). */
#include "aifn.h"

#include <stdlib.h>
#include <string.h>

/* ---- exports ---- */

bool exports_function_preprocess(function_request_t *req, function_list_tensor_t *ret,
                                 function_error_t *err) {
    ret->ptr = NULL;
    ret->len = 0;
    return aifn_preprocess(req, ret, err);
}

bool exports_function_postprocess(function_request_t *req, function_list_tensor_t *outputs,
                                  function_option_response_t *ret, function_error_t *err) {
    ret->is_some = false;
    if (!aifn_postprocess) return true;
    switch (aifn_postprocess(req, outputs, &ret->val, err)) {
    case AIFN_ANSWERED:
        ret->is_some = true;
        return true;
    case AIFN_FAILED:
        return false;
    default:
        return true;
    }
}

/* ---- the request ---- */

aifn_bytes aifn_body(const aifn_request *req) {
    return (aifn_bytes){req->body.ptr, req->body.len};
}

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

aifn_bytes aifn_header(const aifn_request *req, const char *name, bool *found) {
    size_t n = strlen(name);
    for (size_t i = 0; i < req->headers.len; i++) {
        const function_string_t *key = &req->headers.ptr[i].f0;
        if (key->len != n) continue;
        size_t j = 0;
        while (j < n && lower(key->ptr[j]) == lower((unsigned char)name[j])) j++;
        if (j == n) {
            *found = true;
            const function_string_t *value = &req->headers.ptr[i].f1;
            return (aifn_bytes){value->ptr, value->len};
        }
    }
    *found = false;
    return (aifn_bytes){NULL, 0};
}

/* ---- tensors ---- */

static void *copy(const void *data, size_t bytes) {
    void *to = malloc(bytes ? bytes : 1);
    if (to && bytes) memcpy(to, data, bytes);
    return to;
}

/* Appends a tensor with its name and shape; the caller fills in the data. */
static aifn_tensor *push(aifn_tensors *out, const char *name, const uint32_t *shape, size_t ndim) {
    aifn_tensor *grown = realloc(out->ptr, (out->len + 1) * sizeof *grown);
    if (!grown) return NULL;
    out->ptr = grown;
    aifn_tensor *t = &out->ptr[out->len];
    function_string_dup(&t->name, name);
    t->shape.ptr = copy(shape, ndim * sizeof *shape);
    t->shape.len = ndim;
    if (!t->name.ptr || !t->shape.ptr) return NULL;
    out->len++;
    return t;
}

#define PUSH(suffix, type, kind, field)                                                         \
    bool aifn_push_##suffix(aifn_tensors *out, const char *name, const uint32_t *shape,        \
                            size_t ndim, const type *data, size_t n) {                         \
        aifn_tensor *t = push(out, name, shape, ndim);                                         \
        if (!t) return false;                                                                  \
        t->data.tag = kind;                                                                    \
        t->data.val.field.ptr = copy(data, n * sizeof(type));                                  \
        t->data.val.field.len = n;                                                             \
        return t->data.val.field.ptr != NULL;                                                  \
    }

PUSH(f32, float, AIFN_FUNCTION_TYPES_TENSOR_DATA_F32, f32)
PUSH(f64, double, AIFN_FUNCTION_TYPES_TENSOR_DATA_F64, f64)
PUSH(i32, int32_t, AIFN_FUNCTION_TYPES_TENSOR_DATA_I32, i32)
PUSH(i64, int64_t, AIFN_FUNCTION_TYPES_TENSOR_DATA_I64, i64)
PUSH(u8, uint8_t, AIFN_FUNCTION_TYPES_TENSOR_DATA_U8, u8)

const aifn_tensor *aifn_output(const aifn_tensors *outputs, const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < outputs->len; i++) {
        const function_string_t *s = &outputs->ptr[i].name;
        if (s->len == n && memcmp(s->ptr, name, n) == 0) return &outputs->ptr[i];
    }
    return NULL;
}

const float *aifn_f32s(const aifn_tensor *tensor, size_t *n) {
    if (!tensor || tensor->data.tag != AIFN_FUNCTION_TYPES_TENSOR_DATA_F32) {
        *n = 0;
        return NULL;
    }
    *n = tensor->data.val.f32.len;
    return tensor->data.val.f32.ptr;
}

/* ---- answers and errors ---- */

void aifn_respond(aifn_response *response, uint16_t status, const char *content_type,
                  const uint8_t *body, size_t len) {
    response->status = status;
    function_string_dup(&response->content_type, content_type);
    response->body.ptr = copy(body, len);
    response->body.len = len;
}

static bool fail(aifn_error *err, aifn_function_types_error_kind_t kind, const char *message) {
    err->kind = kind;
    function_string_dup(&err->message, message);
    return false;
}

bool aifn_bad_request(aifn_error *err, const char *message) {
    return fail(err, AIFN_FUNCTION_TYPES_ERROR_KIND_BAD_REQUEST, message);
}

bool aifn_internal(aifn_error *err, const char *message) {
    return fail(err, AIFN_FUNCTION_TYPES_ERROR_KIND_INTERNAL, message);
}

/* ---- logging ---- */

static void log_at(aifn_function_log_level_t level, const char *message) {
    function_string_t text;
    function_string_set(&text, message);
    aifn_function_log_log(level, &text);
}

void aifn_log_info(const char *message) { log_at(AIFN_FUNCTION_LOG_LEVEL_INFO, message); }
void aifn_log_warn(const char *message) { log_at(AIFN_FUNCTION_LOG_LEVEL_WARN, message); }
void aifn_log_error(const char *message) { log_at(AIFN_FUNCTION_LOG_LEVEL_ERROR, message); }
