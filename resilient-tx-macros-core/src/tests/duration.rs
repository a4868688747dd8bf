use crate::duration::{format_millis, parse_millis};

#[test]
fn accepts_each_unit() {
    assert_eq!(parse_millis("20ms"), Ok(20));
    assert_eq!(parse_millis("2s"), Ok(2_000));
    assert_eq!(parse_millis("1m"), Ok(60_000));
    assert_eq!(parse_millis("0s"), Ok(0));
    assert_eq!(parse_millis("007ms"), Ok(7));
}

#[test]
fn rejects_everything_else() {
    for (text, why) in [
        ("", "empty"),
        ("2", "unit is missing"),
        ("2 seconds", "no space"),
        ("2 s", "no space"),
        ("5h", "hours are not supported; write \"300m\""),
        ("2 hours", "no space"),
        ("2sec", "unknown unit `sec`"),
        ("2S", "unknown unit `S`"),
        ("2µs", "unknown unit `µs`"),
        ("-1s", "negative"),
        ("+1s", "does not start with a number"),
        ("1.5s", "fractions are not supported; write \"1500ms\""),
        ("0.5m", "fractions are not supported; write \"30s\""),
        ("2,5s", "write \"2500ms\""),
        ("1.25ms", "fractions are not supported; use a smaller unit"),
        ("ms", "does not start with a number"),
        (" 2s", "spaces"),
        ("2s ", "spaces"),
        ("99999999999999999999ms", "too large"),
        ("999999999999999999m", "too large"),
    ] {
        let err = parse_millis(text).expect_err(text);
        assert!(
            err.contains(why),
            "{text:?}: {err:?} should mention {why:?}"
        );
    }
}

#[test]
fn the_message_is_spanned_on_the_literal_and_says_what_to_write() {
    let lit: syn::LitStr = syn::parse_quote!("2 seconds");
    let err = crate::duration::parse(&lit).unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid duration \"2 seconds\": there must be no space between the number and the unit \
         (a duration is a whole number and a unit, `ms`, `s` or `m`: \"20ms\", \"2s\", \"1m\")"
    );
}

#[test]
fn formats_in_the_largest_exact_unit() {
    assert_eq!(format_millis(0), "0ms");
    assert_eq!(format_millis(1_500), "1500ms");
    assert_eq!(format_millis(2_000), "2s");
    assert_eq!(format_millis(90_000), "90s");
    assert_eq!(format_millis(120_000), "2m");
}
