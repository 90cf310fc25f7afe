//! `parse` returns `Ok` or errors for any input, never panics, and every error it returns
//! has a position inside the text.
#![allow(clippy::unwrap_used, missing_docs)]

use proptest::prelude::*;

const SPEC: &str = include_str!("fixtures/spec.toml");

fn check(text: &str) {
    if let Err(errors) = rpcgate_config::parse(text, "f.toml") {
        assert!(!errors.is_empty());
        let lines = text.split('\n').count();
        for e in errors.errors() {
            assert!(
                e.line() >= 1 && e.line() <= lines,
                "{e} (text has {lines} lines)"
            );
            assert!(e.col() >= 1, "{e}");
            assert!(e.to_string().starts_with("f.toml:"), "{e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(text in "\\PC{0,200}") {
        check(&text);
    }

    #[test]
    fn toml_like_text(text in "[\\[\\]a-z_.=\"{},0-9 \n:#-]{0,300}") {
        check(&text);
    }

    /// The SPEC listing with a slice cut out and arbitrary text put in its place: mostly
    /// well-formed TOML with something wrong somewhere.
    #[test]
    fn mutated_spec_listing(
        start in 0..SPEC.len(),
        len in 0usize..40,
        insert in "[\\[\\]a-z_.=\"{},0-9 \n:-]{0,12}",
    ) {
        let start = (0..=start).rev().find(|i| SPEC.is_char_boundary(*i)).unwrap();
        let end = (start + len).min(SPEC.len());
        let end = (end..=SPEC.len()).find(|i| SPEC.is_char_boundary(*i)).unwrap();
        let text = format!("{}{}{}", &SPEC[..start], insert, &SPEC[end..]);
        check(&text);
    }
}
