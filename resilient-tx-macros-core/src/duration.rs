//! Durations written as string literals: `"20ms"`, `"2s"`, `"1m"`.
//!
//! Only whole numbers and the units `ms`, `s` and `m` are accepted: every retry setting
//! the macro takes lives between a few milliseconds and a few minutes, and a short,
//! strict grammar makes a typo a compile error instead of a surprising timeout.

use syn::LitStr;

/// A duration option as written, with its value in milliseconds.
#[derive(Debug, Clone)]
pub(crate) struct DurationLit {
    /// The value in milliseconds.
    pub(crate) millis: u64,
    /// The literal, kept for messages and spans.
    pub(crate) lit: LitStr,
}

/// The units accepted, with their length in milliseconds.
const UNITS: [(&str, u64); 3] = [("ms", 1), ("s", 1_000), ("m", 60_000)];

/// Parses `"<digits><unit>"`; errors are spanned on the literal and say what to write.
pub(crate) fn parse(lit: &LitStr) -> syn::Result<DurationLit> {
    let text = lit.value();
    let millis = parse_millis(&text).map_err(|why| {
        syn::Error::new(
            lit.span(),
            format!(
                "invalid duration {text:?}: {why} (a duration is a whole number and a unit, `ms`, `s` or `m`: \"20ms\", \"2s\", \"1m\")"
            ),
        )
    })?;
    Ok(DurationLit {
        millis,
        lit: lit.clone(),
    })
}

/// The grammar, apart from spans: the value in milliseconds, or why the text is not a
/// duration.
pub(crate) fn parse_millis(text: &str) -> Result<u64, String> {
    if text.is_empty() {
        return Err("it is empty".into());
    }
    if text.trim() != text {
        return Err("it has leading or trailing spaces".into());
    }
    if text.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err("it does not start with a number".into());
    }
    if let Some(rest) = unit.strip_prefix(['.', ',']) {
        return Err(match fraction_in_millis(digits, rest) {
            Some(millis) => format!(
                "fractions are not supported; write {:?}",
                format_millis(millis)
            ),
            None => "fractions are not supported; use a smaller unit".into(),
        });
    }
    if unit.is_empty() {
        return Err("the unit is missing".into());
    }
    if unit.starts_with(char::is_whitespace) {
        return Err("there must be no space between the number and the unit".into());
    }
    let Some(&(_, factor)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        if matches!(unit, "h" | "hr" | "hour" | "hours") {
            return Err(
                match digits.parse::<u64>().ok().and_then(|n| n.checked_mul(60)) {
                    Some(minutes) => format!("hours are not supported; write \"{minutes}m\""),
                    None => "hours are not supported".into(),
                },
            );
        }
        return Err(format!("unknown unit `{unit}`"));
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| "the number is too large".into())
}

/// `12` and `.5s` as whole milliseconds, when that is exact.
fn fraction_in_millis(whole: &str, rest: &str) -> Option<u64> {
    let fraction_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (fraction, unit) = rest.split_at(fraction_end);
    let &(_, factor) = UNITS.iter().find(|(name, _)| *name == unit)?;
    let scale = 10u64.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let scaled: u64 = format!("{whole}{fraction}").parse().ok()?;
    let millis = scaled.checked_mul(factor)?;
    (millis % scale == 0).then_some(millis / scale)
}

/// Milliseconds in the largest unit that shows them exactly.
pub(crate) fn format_millis(millis: u64) -> String {
    match millis {
        0 => "0ms".to_owned(),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1_000 == 0 => format!("{}s", m / 1_000),
        m => format!("{m}ms"),
    }
}
