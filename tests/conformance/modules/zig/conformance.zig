//! The conformance suite's preprocessing (tests/conformance/README.md) with the Zig SDK.
const std = @import("std");
const aifn = @import("aifn");

const length = 8;
const vocabulary = [_][]const u8{ "the", "a", "model", "is", "good", "bad", "not", "very", "fast", "slow", "data", "ai" };
const mean = [4]f64{ 10.0, 0.5, 100.0, -3.0 };
const scale_by = [4]f64{ 2.0, 0.25, 50.0, 4.0 };

fn wordId(word: []const u8) i64 {
    for (vocabulary, 0..) |known, i| {
        if (std.ascii.eqlIgnoreCase(known, word)) return @as(i64, @intCast(i)) + 2;
    }
    return 1;
}

fn tokenize(text: []const u8, out: *aifn.Tensors) !void {
    var ids: [length]i64 = @splat(0);
    var mask: [length]i64 = @splat(0);
    var count: usize = 0;
    var at: usize = 0;
    while (at < text.len and count < length) {
        while (at < text.len and !std.ascii.isAlphanumeric(text[at])) at += 1;
        const start = at;
        while (at < text.len and std.ascii.isAlphanumeric(text[at])) at += 1;
        if (at > start) {
            ids[count] = wordId(text[start..at]);
            mask[count] = 1;
            count += 1;
        }
    }
    try out.pushI64("ids", &.{ 1, length }, &ids);
    try out.pushI64("mask", &.{ 1, length }, &mask);
}

/// [+-]?(digits[.digits?]|.digits)([eE][+-]?digits)?
fn isDecimal(s: []const u8) bool {
    var at: usize = 0;
    var digits: usize = 0;
    if (at < s.len and (s[at] == '+' or s[at] == '-')) at += 1;
    while (at < s.len and std.ascii.isDigit(s[at])) : (at += 1) digits += 1;
    if (at < s.len and s[at] == '.') {
        at += 1;
        while (at < s.len and std.ascii.isDigit(s[at])) : (at += 1) digits += 1;
    }
    if (digits == 0) return false;
    if (at < s.len and (s[at] == 'e' or s[at] == 'E')) {
        at += 1;
        if (at < s.len and (s[at] == '+' or s[at] == '-')) at += 1;
        var exponent: usize = 0;
        while (at < s.len and std.ascii.isDigit(s[at])) : (at += 1) exponent += 1;
        if (exponent == 0) return false;
    }
    return at == s.len;
}

fn scale(list: []const u8, out: *aifn.Tensors) !void {
    var features: [4]f32 = undefined;
    var fields = std.mem.splitScalar(u8, list, ',');
    var count: usize = 0;
    while (fields.next()) |field| : (count += 1) {
        if (count == 4 or !isDecimal(field)) return aifn.badRequest("nums: expects four decimal numbers", .{});
        const x = std.fmt.parseFloat(f64, field) catch return aifn.badRequest("nums: expects four decimal numbers", .{});
        features[count] = @floatCast((x - mean[count]) / scale_by[count]);
    }
    if (count != 4) return aifn.badRequest("nums: expects four decimal numbers", .{});
    try out.pushF32("features", &.{ 1, 4 }, &features);
}

pub fn preprocess(req: aifn.Request, out: *aifn.Tensors) !void {
    if (std.mem.startsWith(u8, req.body, "text:")) return tokenize(req.body[5..], out);
    if (std.mem.startsWith(u8, req.body, "nums:")) return scale(req.body[5..], out);
    return aifn.badRequest("the body starts with `text:` or `nums:`", .{});
}
