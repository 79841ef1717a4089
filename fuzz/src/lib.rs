//! Shared pieces of the fuzz targets: an allocator that turns one absurd allocation into a crash
//! (libFuzzer's `-malloc_limit_mb` needs a sanitizer's malloc hooks, which `--sanitizer none`
//! builds lack), and checks on tensors used by more than one target.

use aifn_tensor::{Tensor, TensorData};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest single allocation a target may make, in MiB (`AIFN_FUZZ_MAX_ALLOC_MB`, default 256).
/// Larger requests abort, which libFuzzer reports as a crash and saves the input of.
pub struct Limited;

static LIMIT: AtomicUsize = AtomicUsize::new(256 << 20);

fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Reads `AIFN_FUZZ_MAX_ALLOC_MB`; call it from the target's `init`.
pub fn init() {
    if let Some(mb) = std::env::var("AIFN_FUZZ_MAX_ALLOC_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        LIMIT.store(mb.max(1) << 20, Ordering::Relaxed);
    }
}

fn too_large(size: usize) -> ! {
    // No allocation here: stderr is unbuffered and the message is static.
    use std::io::Write;
    let _ = std::io::stderr().write_all(
        b"\n==aifn-fuzz== single allocation over AIFN_FUZZ_MAX_ALLOC_MB; bytes requested (hex): 0x",
    );
    let mut digits = [0u8; 16];
    for (i, d) in digits.iter_mut().enumerate() {
        let nibble = (size >> ((15 - i) * 4)) & 0xf;
        *d = b"0123456789abcdef"[nibble];
    }
    let _ = std::io::stderr().write_all(&digits);
    let _ = std::io::stderr().write_all(b"\n");
    std::process::abort()
}

unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > limit() {
            too_large(layout.size());
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > limit() {
            too_large(layout.size());
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > limit() {
            too_large(new_size);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Limited = Limited;

/// The number of elements a shape holds, or `None` if it overflows `usize`.
pub fn elements(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// One element of any tensor type, comparable (floats by their bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    Bits(u64),
    Text(String),
}

pub fn element_list(data: &TensorData) -> Vec<Element> {
    match data {
        TensorData::F32(v) => v
            .iter()
            .map(|x| Element::Bits(x.to_bits().into()))
            .collect(),
        TensorData::F64(v) => v.iter().map(|x| Element::Bits(x.to_bits())).collect(),
        TensorData::I32(v) => v.iter().map(|x| Element::Bits(*x as u32 as u64)).collect(),
        TensorData::I64(v) => v.iter().map(|x| Element::Bits(*x as u64)).collect(),
        TensorData::U8(v) => v.iter().map(|x| Element::Bits((*x).into())).collect(),
        TensorData::Bool(v) => v.iter().map(|x| Element::Bits((*x).into())).collect(),
        TensorData::String(v) => v.iter().map(|x| Element::Text(x.clone())).collect(),
    }
}

fn zero(data: &TensorData) -> Element {
    match data {
        TensorData::String(_) => Element::Text(String::new()),
        _ => Element::Bits(0),
    }
}

/// Checks that `padded` is `original` padded at the end of every dimension but the first with
/// zeros (`false`, `""`): same name, type and rows, each other dimension at least as large, the
/// original elements in place, and zeros everywhere else.
pub fn check_padded(original: &Tensor, padded: &Tensor) -> Result<(), String> {
    if original.name != padded.name || original.dtype() != padded.dtype() {
        return Err(format!(
            "name or type changed: {:?} {} -> {:?} {}",
            original.name,
            original.dtype(),
            padded.name,
            padded.dtype()
        ));
    }
    let (s, p) = (&original.shape, &padded.shape);
    if s.len() != p.len() || s.first() != p.first() || s.iter().zip(p).any(|(a, b)| a > b) {
        return Err(format!("shape {s:?} came back as {p:?}"));
    }
    let total = elements(p).ok_or("padded shape overflows")?;
    if total != padded.data.len() {
        return Err(format!(
            "padded shape {p:?} holds {total} elements but has {}",
            padded.data.len()
        ));
    }
    let have = element_list(&padded.data);
    let want = element_list(&original.data);
    let zero = zero(&padded.data);
    // Walk every index of the padded shape; it is inside the original iff each coordinate is.
    let mut index = vec![0usize; p.len()];
    let mut inside_count = 0;
    for element in &have {
        let inside = index.iter().zip(s).all(|(i, n)| i < n);
        if inside {
            if *element != want[inside_count] {
                return Err(format!(
                    "element at {index:?} is {element:?}, expected {:?}",
                    want[inside_count]
                ));
            }
            inside_count += 1;
        } else if *element != zero {
            return Err(format!("padding at {index:?} is {element:?}, not zero"));
        }
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < p[d] {
                break;
            }
            index[d] = 0;
        }
    }
    if inside_count != want.len() {
        return Err(format!(
            "found {inside_count} original elements of {}",
            want.len()
        ));
    }
    Ok(())
}
