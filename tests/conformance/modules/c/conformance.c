/* The conformance suite's preprocessing (tests/conformance/README.md) with the C SDK. */
#include "aifn.h"

#include <stdlib.h>
#include <string.h>

#define LENGTH 8

static const char *const VOCABULARY[] = {"the", "a",   "model", "is",   "good", "bad",
                                         "not", "very", "fast", "slow", "data", "ai"};
static const double MEAN[4] = {10.0, 0.5, 100.0, -3.0};
static const double SCALE[4] = {2.0, 0.25, 50.0, 4.0};

static int is_alnum(uint8_t b) {
    return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9');
}

static int64_t word_id(const uint8_t *word, size_t len) {
    for (size_t i = 0; i < sizeof VOCABULARY / sizeof *VOCABULARY; i++) {
        if (strlen(VOCABULARY[i]) != len) continue;
        size_t j = 0;
        while (j < len && (uint8_t)VOCABULARY[i][j] == (word[j] | ((word[j] >= 'A' && word[j] <= 'Z') ? 0x20 : 0))) j++;
        if (j == len) return (int64_t)i + 2;
    }
    return 1;
}

static bool tokenize(const uint8_t *text, size_t len, aifn_tensors *out) {
    int64_t ids[LENGTH] = {0}, mask[LENGTH] = {0};
    size_t count = 0, at = 0;
    while (at < len && count < LENGTH) {
        while (at < len && !is_alnum(text[at])) at++;
        size_t start = at;
        while (at < len && is_alnum(text[at])) at++;
        if (at > start) {
            ids[count] = word_id(text + start, at - start);
            mask[count++] = 1;
        }
    }
    const uint32_t shape[2] = {1, LENGTH};
    return aifn_push_i64(out, "ids", shape, 2, ids, LENGTH) &&
           aifn_push_i64(out, "mask", shape, 2, mask, LENGTH);
}

/* [+-]?(digits[.digits?]|.digits)([eE][+-]?digits)? over [start, end). */
static bool is_decimal(const uint8_t *s, size_t len) {
    size_t at = 0, whole = 0, fraction = 0;
    if (at < len && (s[at] == '+' || s[at] == '-')) at++;
    while (at < len && s[at] >= '0' && s[at] <= '9') at++, whole++;
    if (at < len && s[at] == '.') {
        at++;
        while (at < len && s[at] >= '0' && s[at] <= '9') at++, fraction++;
    }
    if (whole == 0 && fraction == 0) return false;
    if (at < len && (s[at] == 'e' || s[at] == 'E')) {
        size_t exponent = 0;
        at++;
        if (at < len && (s[at] == '+' || s[at] == '-')) at++;
        while (at < len && s[at] >= '0' && s[at] <= '9') at++, exponent++;
        if (exponent == 0) return false;
    }
    return at == len;
}

static bool scale(const uint8_t *list, size_t len, aifn_tensors *out, aifn_error *err) {
    float features[4];
    size_t field = 0, start = 0;
    for (size_t at = 0; at <= len; at++) {
        if (at < len && list[at] != ',') continue;
        if (field == 4 || !is_decimal(list + start, at - start))
            return aifn_bad_request(err, "nums: expects four decimal numbers");
        char *number = malloc(at - start + 1);
        if (!number) return aifn_internal(err, "out of memory");
        memcpy(number, list + start, at - start);
        number[at - start] = 0;
        double x = strtod(number, NULL);
        free(number);
        features[field] = (float)((x - MEAN[field]) / SCALE[field]);
        field++;
        start = at + 1;
    }
    if (field != 4) return aifn_bad_request(err, "nums: expects four decimal numbers");
    const uint32_t shape[2] = {1, 4};
    return aifn_push_f32(out, "features", shape, 2, features, 4);
}

bool aifn_preprocess(const aifn_request *req, aifn_tensors *out, aifn_error *err) {
    aifn_bytes body = aifn_body(req);
    if (body.len >= 5 && memcmp(body.ptr, "text:", 5) == 0) return tokenize(body.ptr + 5, body.len - 5, out);
    if (body.len >= 5 && memcmp(body.ptr, "nums:", 5) == 0) return scale(body.ptr + 5, body.len - 5, out, err);
    return aifn_bad_request(err, "the body starts with `text:` or `nums:`");
}
