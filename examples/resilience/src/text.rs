//! How the suite shows durations and long lines to people.

use std::time::Duration;

/// Columns the terminal output fits in.
pub(crate) const WIDTH: usize = 100;

/// A duration for people: `0.42 s`, `12.3 s`.
pub(crate) fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

/// `text` wrapped to [`WIDTH`] columns, the first line after `first`, the others
/// after `rest`; each line ends with a newline.
pub(crate) fn wrap(text: &str, first: &str, rest: &str) -> String {
    let options = textwrap::Options::new(WIDTH)
        .initial_indent(first)
        .subsequent_indent(rest);
    let mut out = String::new();
    for line in textwrap::wrap(text, options) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}
