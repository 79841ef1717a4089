//! `cargo run --manifest-path sdk/c/adapter/Cargo.toml -- OUT.wasm`: writes the WASI preview-1
//! reactor adapter that `wasm-tools component new --adapt` needs for modules built with wasi-libc.

fn main() {
    let out = std::env::args().nth(1).expect("usage: aifn-c-adapter OUT.wasm");
    std::fs::write(
        &out,
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    )
    .unwrap_or_else(|e| panic!("writing {out}: {e}"));
}
