//! `aifn_spec::parse` (what `aifn validate` and `aifn deploy` run) on arbitrary text.
//!
//! Properties: it never panics; an error list is never empty, is in source order, and every error
//! has a 1-based position and names a field (only a YAML syntax error, a root that is not a
//! mapping, or an empty top-level key may lack one); a valid spec renders to normal-form YAML that parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        aifn_fuzz::init();
    },
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        match aifn_spec::parse(text) {
            Ok(spec) => {
                let yaml = aifn_spec::to_yaml(&spec);
                match aifn_spec::parse(&yaml) {
                    Ok(again) => assert_eq!(again, spec, "normal form changed the spec:\n{yaml}"),
                    Err(e) => panic!("the normal form of a valid spec is invalid:\n{yaml}\n{e}"),
                }
            }
            Err(errors) => {
                assert!(!errors.0.is_empty(), "an invalid spec with no error");
                let mut last = (0, 0);
                for e in &errors.0 {
                    assert!(e.line >= 1 && e.column >= 1, "position not 1-based: {e:?}");
                    assert!((e.line, e.column) >= last, "errors out of order: {errors:?}");
                    last = (e.line, e.column);
                    assert!(
                        !e.path.is_empty()
                            || e.message.starts_with("YAML syntax error")
                            || e.message.starts_with("expected a mapping")
                            || e.message.starts_with("unknown field ``"),
                        "error names no field: {e:?}"
                    );
                }
                let _ = errors.to_string();
            }
        }
    }
);
