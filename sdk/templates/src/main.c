/* Preprocessing: the body's byte and word counts as the model's input `x` [1, 2].
 * Postprocessing: the model's `score` as {"score": …}. */
#include "aifn.h"

#include <stdio.h>

static bool is_space(uint8_t b) { return b == ' ' || (b >= '\t' && b <= '\r'); }

bool aifn_preprocess(const aifn_request *req, aifn_tensors *out, aifn_error *err) {
    aifn_bytes body = aifn_body(req);
    size_t words = 0;
    for (size_t i = 0; i < body.len; i++)
        if (!is_space(body.ptr[i]) && (i == 0 || is_space(body.ptr[i - 1]))) words++;
    if (words == 0) return aifn_bad_request(err, "send some text");
    const uint32_t shape[2] = {1, 2};
    const float x[2] = {(float)body.len, (float)words};
    return aifn_push_f32(out, "x", shape, 2, x, 2);
}

aifn_outcome aifn_postprocess(const aifn_request *req, const aifn_tensors *outputs,
                              aifn_response *response, aifn_error *err) {
    (void)req;
    size_t n = 0;
    const float *score = aifn_f32s(aifn_output(outputs, "score"), &n);
    if (!score || n == 0) {
        aifn_internal(err, "the model gave no f32 `score`");
        return AIFN_FAILED;
    }
    char body[64];
    int len = snprintf(body, sizeof body, "{\"score\":%.9g}", score[0]);
    aifn_respond(response, 200, "application/json", (const uint8_t *)body, (size_t)len);
    return AIFN_ANSWERED;
}
