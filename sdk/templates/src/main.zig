//! Preprocessing: the body's byte and word counts as the model's input `x` [1, 2].
//! Postprocessing: the model's `score` as {"score": …}.
const std = @import("std");
const aifn = @import("aifn");

pub fn preprocess(req: aifn.Request, out: *aifn.Tensors) !void {
    var words: usize = 0;
    for (req.body, 0..) |b, i| {
        if (!std.ascii.isWhitespace(b) and (i == 0 or std.ascii.isWhitespace(req.body[i - 1]))) words += 1;
    }
    if (words == 0) return aifn.badRequest("send some text", .{});
    try out.pushF32("x", &.{ 1, 2 }, &.{ @floatFromInt(req.body.len), @floatFromInt(words) });
}

pub fn postprocess(_: aifn.Request, outputs: aifn.Outputs) !?aifn.Response {
    const score = outputs.f32s("score") orelse return aifn.internal("the model gave no f32 `score`", .{});
    return try aifn.json("{{\"score\":{d}}}", .{score[0]});
}
