// aifn AssemblyScript SDK: write a function's preprocessing (and optional postprocessing) in
// AssemblyScript.
//
//   import { Request, Tensors, Outputs, Answer, Failure, badRequest } from "aifn";
//
//   export function preprocess(req: Request, out: Tensors): Failure | null {
//     if (req.body.length == 0) return badRequest("send a body");
//     out.pushF32("x", [1, 1], [<f32>req.body.length]);
//     return null;
//   }
//
//   // Optional: leave `answer` alone to let the host answer with the outputs as JSON.
//   export function postprocess(req: Request, outputs: Outputs, answer: Answer): Failure | null {
//     answer.json(200, `{"score":${outputs.f32s("y")![0]}}`);
//     return null;
//   }
//
// Build with `sdk/assemblyscript/build.sh OUT.wasm main.ts`. AssemblyScript has no exceptions, so a
// function returns a Failure (badRequest: HTTP 400, internal: HTTP 500) or null. This file implements
// the component model's canonical ABI for the `aifn:function` world (spec/wit/function.wit) by hand:
// the module is a core module with no imports but the log, which `wasm-tools` wraps into a component.
// Every request gets a fresh instance, so nothing allocated needs freeing.

// ---- what the user sees ----

export class Header {
  constructor(public name: string, public value: string) {}
}

/** The HTTP request that reached the endpoint. Header names are lower case. */
export class Request {
  constructor(
    public route: string,
    public method: string,
    public headers: Header[],
    public body: Uint8Array,
  ) {}

  /** The body as text (invalid UTF-8 becomes U+FFFD). */
  text(): string {
    return String.UTF8.decodeUnsafe(this.body.dataStart, this.body.length);
  }

  /** A header's value (names match case-insensitively), or null. */
  header(name: string): string | null {
    const lower = name.toLowerCase();
    for (let i = 0; i < this.headers.length; i++) {
      if (this.headers[i].name == lower) return this.headers[i].value;
    }
    return null;
  }
}

/** Why a request failed: the caller's fault (HTTP 400) or the function's (HTTP 500). */
export class Failure {
  constructor(public badRequest: bool, public message: string) {}
}

export function badRequest(message: string): Failure {
  return new Failure(true, message);
}

export function internal(message: string): Failure {
  return new Failure(false, message);
}

enum Dtype { F32 = 0, F64 = 1, I32 = 2, I64 = 3, U8 = 4 }

/** A tensor as the host gets it: name, shape and the elements' bytes. */
class Pending {
  constructor(public name: string, public shape: u32[], public dtype: Dtype, public data: usize, public count: i32) {}
}

/** The tensors `preprocess` returns to the host, in order. */
export class Tensors {
  items: Pending[] = [];

  pushF32(name: string, shape: u32[], data: f32[]): void { this.push(name, shape, Dtype.F32, data.dataStart, data.length, 4); }
  pushF64(name: string, shape: u32[], data: f64[]): void { this.push(name, shape, Dtype.F64, data.dataStart, data.length, 8); }
  pushI32(name: string, shape: u32[], data: i32[]): void { this.push(name, shape, Dtype.I32, data.dataStart, data.length, 4); }
  pushI64(name: string, shape: u32[], data: i64[]): void { this.push(name, shape, Dtype.I64, data.dataStart, data.length, 8); }
  pushU8(name: string, shape: u32[], data: u8[]): void { this.push(name, shape, Dtype.U8, data.dataStart, data.length, 1); }

  private push(name: string, shape: u32[], dtype: Dtype, from: usize, count: i32, size: i32): void {
    let expected: i64 = 1;
    for (let i = 0; i < shape.length; i++) expected *= shape[i];
    // A wrong count is a bug in the function: the host would refuse the tensor with less context.
    assert(expected == count, `tensor ${name}: the shape holds ${expected} elements, the data has ${count}`);
    const bytes = <usize>count * size;
    const data = heap.alloc(bytes);
    memory.copy(data, from, bytes);
    this.items.push(new Pending(name, shape, dtype, data, count));
  }
}

/** The model's outputs, by name. */
export class Outputs {
  constructor(private base: usize, private count: i32) {}

  /** Output `name`'s elements if it exists and holds f32. */
  f32s(name: string): f32[] | null {
    for (let i = 0; i < this.count; i++) {
      const t = this.base + <usize>i * TENSOR_SIZE;
      if (readString(t) != name || load<u8>(t, 16) != Dtype.F32) continue;
      const n = load<u32>(t, 24);
      const values = new Array<f32>(n);
      memory.copy(values.dataStart, load<u32>(t, 20), <usize>n * 4);
      return values;
    }
    return null;
  }

  /** Output `name`'s shape, or null. */
  shape(name: string): u32[] | null {
    for (let i = 0; i < this.count; i++) {
      const t = this.base + <usize>i * TENSOR_SIZE;
      if (readString(t) != name) continue;
      const n = load<u32>(t, 12);
      const dims = new Array<u32>(n);
      memory.copy(dims.dataStart, load<u32>(t, 8), <usize>n * 4);
      return dims;
    }
    return null;
  }
}

/** What `postprocess` answers itself; untouched, the host answers with the outputs as JSON. */
export class Answer {
  given: bool = false;
  status: u16 = 200;
  contentType: string = "";
  body: Uint8Array = new Uint8Array(0);

  respond(status: u16, contentType: string, body: Uint8Array): void {
    this.given = true;
    this.status = status;
    this.contentType = contentType;
    this.body = body;
  }

  json(status: u16, text: string): void {
    this.respond(status, "application/json", Uint8Array.wrap(String.UTF8.encode(text)));
  }
}

export enum Level { Trace = 0, Debug = 1, Info = 2, Warn = 3, Error = 4 }

@external("aifn:function/log@0.1.0", "log")
declare function witLog(level: u32, ptr: usize, len: usize): void;

/** Writes to the host's log, tagged with the function's name and version. */
export function log(level: Level, message: string): void {
  const bytes = String.UTF8.encode(message);
  witLog(level, changetype<usize>(bytes), bytes.byteLength);
}

// ---- the canonical ABI (wasm32 memory layouts of the WIT types) ----
// string / list: (pointer u32, length u32). tensor: name @0, shape @8, data @16 (case u8, then the
// list @20). request: route @0, method @8, headers @16, body @24. A result's payload is at @4.

const TENSOR_SIZE: usize = 28;

function readString(at: usize): string {
  return String.UTF8.decodeUnsafe(load<u32>(at), load<u32>(at, 4));
}

function readBytes(ptr: usize, len: usize): Uint8Array {
  const bytes = new Uint8Array(<i32>len);
  memory.copy(bytes.dataStart, ptr, len);
  return bytes;
}

/** Writes a string into fresh memory; stores its (pointer, length) at `at`. */
function writeString(at: usize, text: string): void {
  const bytes = String.UTF8.encode(text);
  const len = <usize>bytes.byteLength;
  const ptr = heap.alloc(len);
  memory.copy(ptr, changetype<usize>(bytes), len);
  store<u32>(at, ptr);
  store<u32>(at, len, 4);
}

function readRequest(route: usize, routeLen: usize, method: usize, methodLen: usize, headers: usize, headerCount: usize, body: usize, bodyLen: usize): Request {
  const list: Header[] = [];
  for (let i: usize = 0; i < headerCount; i++) {
    const h = headers + i * 16;
    list.push(new Header(readString(h), readString(h + 8)));
  }
  return new Request(
    String.UTF8.decodeUnsafe(route, routeLen),
    String.UTF8.decodeUnsafe(method, methodLen),
    list,
    readBytes(body, bodyLen),
  );
}

// result<..., error>: case @0, then error { kind u8 @4, message @8 }, or the ok payload @4.
const returnArea = memory.data(32, 8);

function writeFailure(failure: Failure): usize {
  store<u8>(returnArea, 1);
  store<u8>(returnArea, failure.badRequest ? 0 : 1, 4);
  writeString(returnArea + 8, failure.message);
  return returnArea;
}

export type Preprocess = (req: Request, out: Tensors) => Failure | null;
export type Postprocess = (req: Request, outputs: Outputs, answer: Answer) => Failure | null;

/** The `preprocess` export (called by the entry file that build.sh generates). */
export function runPreprocess(route: usize, routeLen: usize, method: usize, methodLen: usize, headers: usize, headerCount: usize, body: usize, bodyLen: usize, user: Preprocess): usize {
  const req = readRequest(route, routeLen, method, methodLen, headers, headerCount, body, bodyLen);
  const out = new Tensors();
  const failure = user(req, out);
  if (failure) return writeFailure(failure);
  const n = out.items.length;
  const tensors = heap.alloc(<usize>n * TENSOR_SIZE);
  for (let i = 0; i < n; i++) {
    const t = tensors + <usize>i * TENSOR_SIZE;
    const item = out.items[i];
    writeString(t, item.name);
    const dims = heap.alloc(<usize>item.shape.length * 4);
    memory.copy(dims, item.shape.dataStart, <usize>item.shape.length * 4);
    store<u32>(t, dims, 8);
    store<u32>(t, item.shape.length, 12);
    store<u8>(t, item.dtype, 16);
    store<u32>(t, item.data, 20);
    store<u32>(t, item.count, 24);
  }
  store<u8>(returnArea, 0);
  store<u32>(returnArea, tensors, 4);
  store<u32>(returnArea, n, 8);
  return returnArea;
}

/** The `postprocess` export; `user` is null when the module has no postprocess. */
export function runPostprocess(route: usize, routeLen: usize, method: usize, methodLen: usize, headers: usize, headerCount: usize, body: usize, bodyLen: usize, outputs: usize, outputCount: usize, user: Postprocess | null): usize {
  // ok(none) unless the user answers: result case @0, option case @4, response @8
  // { status u16 @8, content-type @12, body @20 }.
  store<u8>(returnArea, 0);
  store<u8>(returnArea, 0, 4);
  if (user == null) return returnArea;
  const req = readRequest(route, routeLen, method, methodLen, headers, headerCount, body, bodyLen);
  const answer = new Answer();
  const failure = user(req, new Outputs(outputs, <i32>outputCount), answer);
  if (failure) return writeFailure(failure);
  if (!answer.given) return returnArea;
  store<u8>(returnArea, 1, 4);
  store<u16>(returnArea, answer.status, 8);
  writeString(returnArea + 12, answer.contentType);
  store<u32>(returnArea, answer.body.dataStart, 20);
  store<u32>(returnArea, answer.body.length, 24);
  return returnArea;
}

/** The host allocates the request's strings and lists in the module's memory through this. */
export function cabiRealloc(old: usize, oldSize: usize, align: usize, newSize: usize): usize {
  // The stub runtime aligns every allocation to 16 bytes, more than any WIT type needs.
  assert(align <= 16);
  const fresh = heap.alloc(newSize);
  if (old) memory.copy(fresh, old, min(oldSize, newSize));
  return fresh;
}
