// The conformance suite's preprocessing (tests/conformance/README.md) with the AssemblyScript SDK.
import { Request, Tensors, Failure, badRequest } from "aifn";

const LENGTH = 8;
const VOCABULARY = ["the", "a", "model", "is", "good", "bad", "not", "very", "fast", "slow", "data", "ai"];
const MEAN: f64[] = [10.0, 0.5, 100.0, -3.0];
const SCALE: f64[] = [2.0, 0.25, 50.0, 4.0];

function isAlnum(b: u8): bool {
  return (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39);
}

function isDigit(b: u8): bool {
  return b >= 0x30 && b <= 0x39;
}

function wordId(text: Uint8Array, start: i32, end: i32): i64 {
  let word = "";
  for (let i = start; i < end; i++) {
    const b = text[i];
    word += String.fromCharCode(b >= 0x41 && b <= 0x5a ? b | 0x20 : b);
  }
  const at = VOCABULARY.indexOf(word);
  return at < 0 ? 1 : at + 2;
}

function tokenize(text: Uint8Array, out: Tensors): Failure | null {
  const ids = new Array<i64>(LENGTH).fill(0);
  const mask = new Array<i64>(LENGTH).fill(0);
  let count = 0;
  let at = 0;
  while (at < text.length && count < LENGTH) {
    while (at < text.length && !isAlnum(text[at])) at++;
    const start = at;
    while (at < text.length && isAlnum(text[at])) at++;
    if (at > start) {
      ids[count] = wordId(text, start, at);
      mask[count++] = 1;
    }
  }
  out.pushI64("ids", [1, LENGTH], ids);
  out.pushI64("mask", [1, LENGTH], mask);
  return null;
}

// [+-]?(digits[.digits?]|.digits)([eE][+-]?digits)?
function isDecimal(s: string): bool {
  let at = 0;
  let digits = 0;
  const n = s.length;
  if (at < n && (s.charCodeAt(at) == 0x2b || s.charCodeAt(at) == 0x2d)) at++;
  while (at < n && isDigit(<u8>s.charCodeAt(at))) { at++; digits++; }
  if (at < n && s.charCodeAt(at) == 0x2e) {
    at++;
    while (at < n && isDigit(<u8>s.charCodeAt(at))) { at++; digits++; }
  }
  if (digits == 0) return false;
  if (at < n && (s.charCodeAt(at) == 0x65 || s.charCodeAt(at) == 0x45)) {
    at++;
    if (at < n && (s.charCodeAt(at) == 0x2b || s.charCodeAt(at) == 0x2d)) at++;
    let exponent = 0;
    while (at < n && isDigit(<u8>s.charCodeAt(at))) { at++; exponent++; }
    if (exponent == 0) return false;
  }
  return at == n;
}

function scale(list: string, out: Tensors): Failure | null {
  const fields = list.split(",");
  if (fields.length != 4) return badRequest("nums: expects four decimal numbers");
  const features = new Array<f32>(4);
  for (let i = 0; i < 4; i++) {
    if (!isDecimal(fields[i])) return badRequest("nums: expects four decimal numbers");
    features[i] = <f32>((parseFloat(fields[i]) - MEAN[i]) / SCALE[i]);
  }
  out.pushF32("features", [1, 4], features);
  return null;
}

export function preprocess(req: Request, out: Tensors): Failure | null {
  const text = req.text();
  if (text.startsWith("text:")) return tokenize(req.body.subarray(5), out);
  if (text.startsWith("nums:")) return scale(text.substring(5), out);
  return badRequest("the body starts with `text:` or `nums:`");
}
