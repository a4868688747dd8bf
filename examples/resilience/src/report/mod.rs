//! The resilience report as one self-contained HTML file: the matrix on top (case,
//! PASS/FAIL, observation, time to recover), then one section per case with its
//! timeline as inline SVG ([`chart`]), its faults, figures, notes and checks. No
//! external assets and no script: it opens the same from a file, a CI artifact or an
//! email.

mod chart;
mod series;

use std::fmt::Write as _;
use std::time::Duration;

use crate::observation::Observation;
use crate::text::secs;

/// The style sheet, inline so the file stands alone.
const STYLE: &str = "
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif;
       color: #24292f; margin: 24px auto; max-width: 1000px; padding: 0 16px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 6px; }
p.lead { color: #57606a; margin: 0 0 16px; }
table.matrix { border-collapse: collapse; width: 100%; margin-bottom: 28px; }
table.matrix th, table.matrix td { border-bottom: 1px solid #d0d7de; padding: 6px 8px;
       text-align: left; vertical-align: top; }
table.matrix th { background: #f6f8fa; font-weight: 600; }
table.matrix td.num { text-align: right; white-space: nowrap; }
table.matrix td.case { white-space: nowrap; }
.verdict { font-weight: 700; padding: 1px 6px; border-radius: 4px; color: #fff; }
.pass .verdict { background: #1a7f37; }
.fail .verdict { background: #cf222e; }
section.case { border: 1px solid #d0d7de; border-radius: 6px; padding: 14px 16px;
       margin-bottom: 22px; }
section.case.fail { border-color: #cf222e; }
svg.timeline { display: block; max-width: 100%; height: auto; margin: 8px 0; }
ol.faults { margin: 4px 0 8px; padding-left: 24px; color: #57606a; }
dl.figures { display: grid; grid-template-columns: max-content auto; gap: 2px 12px;
       margin: 8px 0; }
dl.figures dt { color: #57606a; }
dl.figures dd { margin: 0; }
ul.checks { list-style: none; padding: 0; margin: 8px 0 0; }
ul.checks li { padding: 2px 0 2px 26px; text-indent: -26px; }
ul.checks li::before { display: inline-block; width: 26px; text-indent: 0; }
ul.checks li.ok::before { content: '✔'; color: #1a7f37; }
ul.checks li.failed::before { content: '✘'; color: #cf222e; }
ul.checks li.failed { color: #cf222e; font-weight: 600; }
ul.notes { color: #57606a; }
p.error { color: #cf222e; font-weight: 600; }
";

/// The whole report: the matrix, then a section per observation, in their order.
pub fn html(observations: &[Observation]) -> String {
    let passed = observations.iter().filter(|o| o.passed()).count();
    let took: Duration = observations.iter().map(|o| o.elapsed).sum();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Resilience matrix: {passed} of {total} passed</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n<h1>Resilience matrix</h1>\n\
         <p class=\"lead\">{passed} of {total} cases passed; the cases took {took} in all. Each \
         case ran against its own throwaway PostgreSQL servers and its own gateway, driven over \
         HTTP.</p>\n",
        total = observations.len(),
        took = secs(took),
    );
    matrix(&mut out, observations);
    for (i, o) in observations.iter().enumerate() {
        section(&mut out, o, i);
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// The table on top: one row per case, linking to its section.
fn matrix(out: &mut String, observations: &[Observation]) {
    out.push_str(
        "<table class=\"matrix\">\n<thead><tr><th>case</th><th>result</th><th>observation</th>\
         <th>time to recover</th><th>took</th></tr></thead>\n<tbody>\n",
    );
    for (i, o) in observations.iter().enumerate() {
        let observed = match &o.error {
            Some(error) => format!("error: {error}"),
            None => o.summary.clone(),
        };
        let _ = writeln!(
            out,
            "<tr class=\"{class}\"><td class=\"case\"><a href=\"#{anchor}\">{id} {title}</a></td>\
             <td><span class=\"verdict\">{verdict}</span></td><td>{observed}</td>\
             <td class=\"num\">{recovery}</td><td class=\"num\">{took}</td></tr>",
            class = class(o),
            anchor = anchor(o, i),
            id = o.case.id(),
            title = escape(&o.title()),
            verdict = o.verdict(),
            observed = escape(&observed),
            recovery = o.recovery.map(secs).unwrap_or_else(|| "–".to_owned()),
            took = secs(o.elapsed),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

/// One case: verdict, what was observed, the timeline, the faults, figures, notes and
/// every check.
fn section(out: &mut String, o: &Observation, i: usize) {
    let _ = writeln!(
        out,
        "<section class=\"case {class}\" id=\"{anchor}\">\n<h2>{id} {title} \
         <span class=\"verdict\">{verdict}</span></h2>",
        class = class(o),
        anchor = anchor(o, i),
        id = o.case.id(),
        title = escape(&o.title()),
        verdict = o.verdict(),
    );
    if let Some(error) = &o.error {
        let _ = writeln!(out, "<p class=\"error\">error: {}</p>", escape(error));
    }
    if !o.summary.is_empty() {
        let _ = writeln!(out, "<p class=\"observed\">{}</p>", escape(&o.summary));
    }
    out.push_str(&chart::svg(&o.timeline, o.elapsed));
    let _ = writeln!(
        out,
        "\n<p class=\"lead\">Answers per 100 ms, by the time they came back ({} requests), \
         stacked by outcome; shaded: the fault windows; green: the interval the time to \
         recover measures.</p>",
        o.timeline.requests.len()
    );
    let numbers = chart::fault_numbers(&o.timeline);
    if !numbers.is_empty() {
        out.push_str("<ol class=\"faults\">\n");
        for ((n, label), fault) in numbers.iter().zip(&o.timeline.faults) {
            let when = match fault.end {
                Some(end) if end == fault.start => format!("at {}", at(fault.start)),
                Some(end) => format!("{} – {}", at(fault.start), at(end)),
                None => format!("from {} on", at(fault.start)),
            };
            let _ = writeln!(out, "<li value=\"{n}\">{}: {when}</li>", escape(label));
        }
        out.push_str("</ol>\n");
    }
    out.push_str("<dl class=\"figures\">\n");
    let _ = writeln!(out, "<dt>took</dt><dd>{}</dd>", secs(o.elapsed));
    if let Some(recovery) = o.recovery {
        let _ = writeln!(out, "<dt>time to recover</dt><dd>{}</dd>", secs(recovery));
    }
    for (name, value) in &o.figures {
        let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", escape(name), escape(value));
    }
    out.push_str("</dl>\n");
    if !o.notes.is_empty() {
        out.push_str("<ul class=\"notes\">\n");
        for note in &o.notes {
            let _ = writeln!(out, "<li>{}</li>", escape(note));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<ul class=\"checks\">\n");
    for check in &o.checks {
        let _ = writeln!(
            out,
            "<li class=\"{}\">{}</li>",
            if check.passed { "ok" } else { "failed" },
            escape(&check.what)
        );
    }
    out.push_str("</ul>\n</section>\n");
}

/// `pass` or `fail`, for the style sheet.
fn class(o: &Observation) -> &'static str {
    if o.passed() { "pass" } else { "fail" }
}

/// The section's id: `cl-01`; a case run under a variant also carries its place in
/// the report (`fo-01-3`), as the same case may run under several.
fn anchor(o: &Observation, i: usize) -> String {
    let id = o.case.id().to_ascii_lowercase();
    match o.variant {
        Some(_) => format!("{id}-{}", i + 1),
        None => id,
    }
}

/// A point of a case's timeline: `+6.8 s`.
fn at(t: Duration) -> String {
    format!("+{:.1} s", t.as_secs_f64())
}

/// Text made safe for HTML content and attribute values. Five characters are all
/// there is to it, which is why no crate does it here.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Case;
    use crate::observation::Check;

    fn observation(case: Case, passed: bool) -> Observation {
        let mut o = Observation::new(case);
        o.summary = "API 503 <database_unavailable> & back".to_owned();
        o.checks.push(Check {
            passed,
            what: "it held".to_owned(),
        });
        o.recovery = Some(Duration::from_millis(20));
        o.elapsed = Duration::from_secs(3);
        o
    }

    #[test]
    fn one_section_with_one_svg_per_case_and_a_row_each_in_the_matrix() {
        let observations = [
            observation(Case::Cl01, true),
            observation(Case::Tx03, false),
        ];
        let page = html(&observations);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches("<section class=\"case").count(), 2);
        assert_eq!(page.matches("<svg").count(), 2);
        assert_eq!(page.matches("<tr class=").count(), 2);
        assert!(page.contains("id=\"cl-01\"") && page.contains("href=\"#tx-03\""));
        assert!(page.contains("1 of 2 cases passed"));
        assert!(page.contains("API 503 &lt;database_unavailable&gt; &amp; back"));
        for external in ["<script", "<link", "src=", "url("] {
            assert!(!page.contains(external), "{external}");
        }
    }

    #[test]
    fn escaping_covers_content_and_attributes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
