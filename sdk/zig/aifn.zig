//! aifn Zig SDK: write a function's preprocessing (and optional postprocessing) in Zig.
//!
//!     const aifn = @import("aifn");
//!
//!     pub fn preprocess(req: aifn.Request, out: *aifn.Tensors) !void {
//!         if (req.body.len == 0) return aifn.badRequest("send a body", .{});
//!         try out.pushF32("x", &.{ 1, 1 }, &.{@floatFromInt(req.body.len)});
//!     }
//!
//!     // Optional: return null to let the host answer with the outputs as JSON.
//!     pub fn postprocess(req: aifn.Request, outputs: aifn.Outputs) !?aifn.Response {
//!         const y = outputs.f32s("y") orelse return aifn.internal("no output y", .{});
//!         return try aifn.json("{{\"score\":{d}}}", .{y[0]});
//!     }
//!
//! Build with `sdk/zig/build.sh OUT.wasm main.zig`. This file implements the component model's
//! canonical ABI for the `aifn:function` world (spec/wit/function.wit) by hand, so the module needs
//! no libc and no WASI: it is a freestanding wasm32 core module that `wasm-tools` wraps into a
//! component. Nothing allocated needs freeing: what a request allocates is reclaimed when it ends.
const std = @import("std");

/// Allocates from the instance's linear memory; everything is dropped with the instance.
pub const allocator: std.mem.Allocator = .{ .ptr = undefined, .vtable = &Bump.vtable };

/// A bump allocator at the end of linear memory. Nothing is freed one by one (a resize in place at
/// the top is the one reuse): all a request allocated is reclaimed when it ends, so keep nothing
/// from `allocator` in globals across requests. Memory grows in 64 KiB steps or more, so a request
/// rarely grows it more than once (each growth is a call into the host).
const Bump = struct {
    var base: usize = 0;
    var next: usize = 0;
    var end: usize = 0;

    fn reset() void {
        next = base;
    }

    const vtable: std.mem.Allocator.VTable = .{ .alloc = alloc, .resize = resize, .remap = remap, .free = free };
    const page = 64 * 1024;

    fn alloc(_: *anyopaque, len: usize, alignment: std.mem.Alignment, _: usize) ?[*]u8 {
        if (end == 0) {
            end = @wasmMemorySize(0) * page;
            base = end;
            next = end;
        }
        const start = alignment.forward(next);
        if (start + len > end) {
            const pages = @max((start + len - end + page - 1) / page, 4);
            if (@wasmMemoryGrow(0, pages) < 0) return null;
            end += pages * page;
        }
        next = start + len;
        return @ptrFromInt(start);
    }

    fn resize(_: *anyopaque, memory: []u8, _: std.mem.Alignment, new_len: usize, _: usize) bool {
        if (new_len <= memory.len) return true;
        // Only the latest allocation can grow in place.
        if (@intFromPtr(memory.ptr) + memory.len != next or @intFromPtr(memory.ptr) + new_len > end) return false;
        next = @intFromPtr(memory.ptr) + new_len;
        return true;
    }

    fn remap(ctx: *anyopaque, memory: []u8, alignment: std.mem.Alignment, new_len: usize, ret: usize) ?[*]u8 {
        return if (resize(ctx, memory, alignment, new_len, ret)) memory.ptr else null;
    }

    fn free(_: *anyopaque, _: []u8, _: std.mem.Alignment, _: usize) void {}
};

// ---- what the user sees ----

pub const Header = struct { name: []const u8, value: []const u8 };

/// The HTTP request that reached the endpoint. Header names are lower case.
pub const Request = struct {
    route: []const u8,
    method: []const u8,
    headers: []const WitHeader,
    body: []const u8,

    /// A header's value (names match case-insensitively), or null.
    pub fn header(self: Request, name: []const u8) ?[]const u8 {
        for (self.headers) |h| {
            if (std.ascii.eqlIgnoreCase(h.name.slice(), name)) return h.value.slice();
        }
        return null;
    }
};

/// Errors a function returns: `error.BadRequest` (HTTP 400) and `error.Internal` (HTTP 500) carry the
/// message set by `badRequest`/`internal`; any other error answers 500 with the error's name.
pub const Error = error{ BadRequest, Internal, OutOfMemory };

var message: []const u8 = "";

/// Reports the caller's fault (HTTP 400): `return aifn.badRequest("...", .{});`
pub fn badRequest(comptime fmt: []const u8, args: anytype) Error {
    message = std.fmt.allocPrint(allocator, fmt, args) catch "bad request";
    return error.BadRequest;
}

/// Reports the function's own failure (HTTP 500).
pub fn internal(comptime fmt: []const u8, args: anytype) Error {
    message = std.fmt.allocPrint(allocator, fmt, args) catch "internal error";
    return error.Internal;
}

/// The tensors `preprocess` returns to the host, in order.
pub const Tensors = struct {
    items: []WitTensor = &.{},

    pub fn pushF32(self: *Tensors, name: []const u8, shape: []const u32, data: []const f32) Error!void {
        try self.push(.f32, name, shape, data);
    }
    pub fn pushF64(self: *Tensors, name: []const u8, shape: []const u32, data: []const f64) Error!void {
        try self.push(.f64, name, shape, data);
    }
    pub fn pushI32(self: *Tensors, name: []const u8, shape: []const u32, data: []const i32) Error!void {
        try self.push(.i32, name, shape, data);
    }
    pub fn pushI64(self: *Tensors, name: []const u8, shape: []const u32, data: []const i64) Error!void {
        try self.push(.i64, name, shape, data);
    }
    pub fn pushU8(self: *Tensors, name: []const u8, shape: []const u32, data: []const u8) Error!void {
        try self.push(.u8, name, shape, data);
    }

    fn push(self: *Tensors, comptime dtype: Dtype, name: []const u8, shape: []const u32, data: anytype) Error!void {
        var count: usize = 1;
        for (shape) |d| count *= d;
        if (count != data.len) return internal("tensor {s}: shape holds {d} elements, data has {d}", .{ name, count, data.len });
        const copy = try allocator.dupe(@TypeOf(data[0]), data);
        const tensor = WitTensor{
            .name = try WitList(u8).copy(name),
            .shape = try WitList(u32).copy(shape),
            .data = .{ .tag = @intFromEnum(dtype), .ptr = address(copy.ptr, copy.len), .len = copy.len },
        };
        const grown = try allocator.realloc(self.items, self.items.len + 1);
        grown[grown.len - 1] = tensor;
        self.items = grown;
    }
};

/// The model's outputs, by name.
pub const Outputs = struct {
    items: []const WitTensor,

    /// Output `name`'s elements if it exists and holds f32.
    pub fn f32s(self: Outputs, name: []const u8) ?[]const f32 {
        for (self.items) |t| {
            if (std.mem.eql(u8, t.name.slice(), name) and t.data.tag == @intFromEnum(Dtype.f32))
                return @as([*]const f32, @ptrFromInt(t.data.ptr))[0..t.data.len];
        }
        return null;
    }

    /// Output `name`'s shape, or null.
    pub fn shape(self: Outputs, name: []const u8) ?[]const u32 {
        for (self.items) |t| {
            if (std.mem.eql(u8, t.name.slice(), name)) return t.shape.slice();
        }
        return null;
    }
};

/// What `postprocess` answers itself.
pub const Response = struct {
    status: u16 = 200,
    content_type: []const u8,
    body: []const u8,
};

/// A JSON answer formatted with `std.fmt` (braces doubled: `"{{\"x\":{d}}}"`).
pub fn json(comptime fmt: []const u8, args: anytype) Error!Response {
    return .{ .content_type = "application/json", .body = try std.fmt.allocPrint(allocator, fmt, args) };
}

pub const Level = enum(u32) { trace, debug, info, warn, err };

/// Writes to the host's log, tagged with the function's name and version.
pub fn log(level: Level, text: []const u8) void {
    wit_log(@intFromEnum(level), text.ptr, text.len);
}

// ---- the canonical ABI (wasm32 memory layouts of the WIT types) ----

const Dtype = enum(u8) { f32, f64, i32, i64, u8, bool, string };

fn WitList(comptime T: type) type {
    return extern struct {
        ptr: usize,
        len: usize,

        fn slice(self: @This()) []const T {
            if (self.len == 0) return &.{};
            return @as([*]const T, @ptrFromInt(self.ptr))[0..self.len];
        }

        /// A view of `items`. The host checks that every list lies inside memory, even an empty
        /// one, and Zig gives empty slices an address far outside it: those point at `anchor`.
        fn of(items: []const T) @This() {
            return .{ .ptr = address(items.ptr, items.len), .len = items.len };
        }

        fn copy(items: []const T) Error!@This() {
            return of(try allocator.dupe(T, items));
        }
    };
}

var anchor: u64 = 0;

fn address(ptr: anytype, len: usize) usize {
    return if (len == 0) @intFromPtr(&anchor) else @intFromPtr(ptr);
}

pub const WitHeader = extern struct { name: WitList(u8), value: WitList(u8) };
/// `tensor-data`: a variant whose every case is a list, so one (pointer, length) payload.
const WitTensorData = extern struct { tag: u8, ptr: usize, len: usize };
pub const WitTensor = extern struct { name: WitList(u8), shape: WitList(u32), data: WitTensorData };
const WitError = extern struct { kind: u8, message: WitList(u8) };
const WitResponse = extern struct { status: u16, content_type: WitList(u8), body: WitList(u8) };

/// `result<list<tensor>, error>`
const PreprocessResult = extern struct {
    is_err: u8,
    payload: extern union { ok: WitList(WitTensor), err: WitError },
};
/// `result<option<response>, error>`
const PostprocessResult = extern struct {
    is_err: u8,
    payload: extern union { ok: extern struct { is_some: u8, response: WitResponse }, err: WitError },
};

const wit_log = @extern(*const fn (u32, [*]const u8, usize) callconv(.c) void, .{
    .name = "log",
    .library_name = "aifn:function/log@0.1.0",
});

var preprocess_result: PreprocessResult = undefined;
var postprocess_result: PostprocessResult = undefined;

fn witError(e: anyerror) WitError {
    const kind: u8 = if (e == error.BadRequest) 0 else 1;
    const text = switch (e) {
        error.BadRequest, error.Internal => if (message.len > 0) message else @errorName(e),
        error.OutOfMemory => "out of memory",
        else => @errorName(e),
    };
    return .{ .kind = kind, .message = WitList(u8).of(text) };
}

fn request(route: WitList(u8), method: WitList(u8), headers: WitList(WitHeader), body: WitList(u8)) Request {
    return .{ .route = route.slice(), .method = method.slice(), .headers = headers.slice(), .body = body.slice() };
}

/// The core module's exports for the user's module (the build's entry file calls `exportFunction`).
fn Exports(comptime user: type) type {
    return struct {
        fn preprocess(r_ptr: usize, r_len: usize, m_ptr: usize, m_len: usize, h_ptr: usize, h_len: usize, b_ptr: usize, b_len: usize) callconv(.c) *PreprocessResult {
            const req = request(.{ .ptr = r_ptr, .len = r_len }, .{ .ptr = m_ptr, .len = m_len }, .{ .ptr = h_ptr, .len = h_len }, .{ .ptr = b_ptr, .len = b_len });
            var out = Tensors{};
            message = "";
            if (user.preprocess(req, &out)) |_| {
                preprocess_result = .{ .is_err = 0, .payload = .{ .ok = WitList(WitTensor).of(out.items) } };
            } else |e| {
                preprocess_result = .{ .is_err = 1, .payload = .{ .err = witError(e) } };
            }
            return &preprocess_result;
        }

        fn postprocess(r_ptr: usize, r_len: usize, m_ptr: usize, m_len: usize, h_ptr: usize, h_len: usize, b_ptr: usize, b_len: usize, o_ptr: usize, o_len: usize) callconv(.c) *PostprocessResult {
            postprocess_result = .{ .is_err = 0, .payload = .{ .ok = .{ .is_some = 0, .response = undefined } } };
            message = "";
            if (!@hasDecl(user, "postprocess")) return &postprocess_result;
            const req = request(.{ .ptr = r_ptr, .len = r_len }, .{ .ptr = m_ptr, .len = m_len }, .{ .ptr = h_ptr, .len = h_len }, .{ .ptr = b_ptr, .len = b_len });
            const outputs = Outputs{ .items = (WitList(WitTensor){ .ptr = o_ptr, .len = o_len }).slice() };
            if (user.postprocess(req, outputs)) |answer| {
                if (answer) |r| {
                    const response = WitResponse{
                        .status = r.status,
                        .content_type = WitList(u8).of(r.content_type),
                        .body = WitList(u8).of(r.body),
                    };
                    postprocess_result.payload = .{ .ok = .{ .is_some = 1, .response = response } };
                }
            } else |e| {
                postprocess_result = .{ .is_err = 1, .payload = .{ .err = witError(e) } };
            }
            return &postprocess_result;
        }
    };
}

/// The host allocates the request's strings and lists in the module's memory through this. Out of
/// memory traps: the host would otherwise write the request at address 0.
fn cabiRealloc(old: ?[*]u8, old_size: usize, alignment: usize, new_size: usize) callconv(.c) [*]u8 {
    const fresh = allocator.rawAlloc(@max(new_size, 1), std.mem.Alignment.fromByteUnits(alignment), @returnAddress()) orelse @trap();
    if (old) |o| @memcpy(fresh[0..@min(old_size, new_size)], o[0..@min(old_size, new_size)]);
    return fresh;
}

/// Called by the host once it has read what `postprocess` returned: the request is over, so its
/// memory is reclaimed (this matters when the spec lets instances serve many requests).
fn postPostprocess(_: *PostprocessResult) callconv(.c) void {
    Bump.reset();
}

/// After `preprocess`: a failed request is over too.
fn postPreprocess(result: *PreprocessResult) callconv(.c) void {
    if (result.is_err != 0) Bump.reset();
}

/// Exports `user`'s `preprocess` (and `postprocess`, if it has one) as the `aifn:function` world.
pub fn exportFunction(comptime user: type) void {
    const exports = Exports(user);
    @export(&exports.preprocess, .{ .name = "preprocess" });
    @export(&exports.postprocess, .{ .name = "postprocess" });
    @export(&cabiRealloc, .{ .name = "cabi_realloc" });
    @export(&postPreprocess, .{ .name = "cabi_post_preprocess" });
    @export(&postPostprocess, .{ .name = "cabi_post_postprocess" });
}
