//! The report in a real browser: headless Chromium (Debian's `chromium` package)
//! loads the file, dumps the DOM as it rendered it and takes a screenshot; both are
//! checked. Chromium missing is a failure that says how to install it, never a skip:
//! CI installs it (`.ci/run`).

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use resilience::Case;

/// Where Debian's package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Size of the browser window for the screenshot: the matrix and the first cases.
const WINDOW: (u32, u32) = (1280, 2400);

/// Longest one run of the browser may take.
const BROWSER_LIMIT: Duration = Duration::from_secs(90);

/// Fills of the chart's bars (`src/report/series.rs`), less the near-black of `no
/// answer`, which the text shares: the screenshot must show some.
const BAR_COLORS: &[[u8; 3]] = &[
    [0x2d, 0xa4, 0x4e],
    [0xcf, 0x22, 0x2e],
    [0xfb, 0x85, 0x00],
    [0x82, 0x50, 0xdf],
    [0x9a, 0x67, 0x00],
];

/// Loads `html` in Chromium, checks the rendered DOM has the matrix and one section
/// with one SVG per case of `cases`, and that a screenshot (written to `png`) shows a
/// page with the charts painted. `Ok` says what was seen.
pub fn check_report(html: &Path, png: &Path, cases: &[Case]) -> Result<String, String> {
    if !Path::new(CHROMIUM).exists() {
        return Err(format!(
            "Chromium is not installed ({CHROMIUM} is missing); install Debian's package: \
             apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium \
             (.ci/run does this)"
        ));
    }
    let url = format!("file://{}", html.display());
    let dom = run_chromium(&["--dump-dom", &url])?;
    let sections = check_dom(&dom, cases)?;
    let _ = std::fs::remove_file(png);
    run_chromium(&[
        &format!("--screenshot={}", png.display()),
        &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        &url,
    ])?;
    let painted = check_screenshot(png)?;
    Ok(format!("{sections}; {painted}"))
}

/// Runs headless Chromium with `args` on a profile of its own; its stdout.
fn run_chromium(args: &[&str]) -> Result<String, String> {
    let profile = tempfile::tempdir().map_err(|e| format!("no temporary profile: {e}"))?;
    // As root Chromium refuses to start without --no-sandbox; the page is our own file.
    // On a machine without network the background services make it hang or fail
    // (QUIC, component updates, sync): they are off.
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {CHROMIUM}: {e}"))?;
    // Read both pipes while it runs, so a full pipe cannot stall it.
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > BROWSER_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "Chromium did not finish within {} s ({args:?})",
                    BROWSER_LIMIT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for Chromium failed: {e}")),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "Chromium failed ({status}) with {args:?}:\n{}",
            stderr.lines().rev().take(15).collect::<Vec<_>>().join("\n")
        ));
    }
    Ok(stdout)
}

/// The DOM Chromium rendered has the matrix (a row per case) and one section per case,
/// in order, each with exactly one SVG that has bars or an axis in it.
fn check_dom(dom: &str, cases: &[Case]) -> Result<String, String> {
    let rows = dom.matches("<tr class=").count();
    if rows != cases.len() {
        return Err(format!(
            "the matrix has {rows} rows, not {} (DOM: {} bytes)",
            cases.len(),
            dom.len()
        ));
    }
    let sections: Vec<&str> = dom
        .split("<section ")
        .skip(1)
        .filter(|s| s.starts_with("class=\"case"))
        .map(|s| s.split("</section>").next().unwrap_or(s))
        .collect();
    if sections.len() != cases.len() {
        return Err(format!(
            "{} case sections rendered, not {}",
            sections.len(),
            cases.len()
        ));
    }
    let mut svgs = 0;
    for (section, case) in sections.iter().zip(cases) {
        let id = format!("id=\"{}\"", case.id().to_ascii_lowercase());
        if !section[..section.find('>').unwrap_or(section.len())].contains(&id) {
            return Err(format!("the section for {case} is missing or out of order"));
        }
        let in_section = section.matches("<svg").count();
        if in_section != 1 || !section.contains("<rect") || !section.contains("<line") {
            return Err(format!(
                "the section for {case} has {in_section} SVGs (one with bars and axes wanted)"
            ));
        }
        svgs += in_section;
    }
    Ok(format!(
        "{rows} matrix rows, {} case sections, {svgs} SVGs",
        sections.len()
    ))
}

/// The screenshot is a PNG of the window's size showing many colors, the charts'
/// bars among them: a page that rendered, not a blank or an error page.
fn check_screenshot(png: &Path) -> Result<String, String> {
    let bytes =
        std::fs::read(png).map_err(|e| format!("no screenshot at {}: {e}", png.display()))?;
    let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("the screenshot is not a PNG: {e}"))?;
    let mut pixels = vec![0; reader.output_buffer_size().ok_or("a PNG too large")?];
    let frame = reader
        .next_frame(&mut pixels)
        .map_err(|e| format!("the screenshot does not decode: {e}"))?;
    if (frame.width, frame.height) != WINDOW {
        return Err(format!(
            "the screenshot is {}×{}, not the window's {}×{}",
            frame.width, frame.height, WINDOW.0, WINDOW.1
        ));
    }
    let channels = frame.color_type.samples();
    if channels < 3 || frame.bit_depth != png::BitDepth::Eight {
        return Err(format!(
            "unexpected screenshot format: {:?} {:?}",
            frame.color_type, frame.bit_depth
        ));
    }
    let mut colors = std::collections::HashSet::new();
    let mut bar_pixels = 0;
    for pixel in pixels[..frame.buffer_size()].chunks_exact(channels) {
        let rgb = [pixel[0], pixel[1], pixel[2]];
        colors.insert(rgb);
        if BAR_COLORS.contains(&rgb) {
            bar_pixels += 1;
        }
    }
    if colors.len() < 32 || bar_pixels < 1000 {
        return Err(format!(
            "the screenshot looks empty: {} colors, {bar_pixels} pixels of bars ({} bytes)",
            colors.len(),
            bytes.len()
        ));
    }
    Ok(format!(
        "screenshot {}×{}, {} KB, {} colors, {bar_pixels} pixels of bars",
        frame.width,
        frame.height,
        bytes.len() / 1024,
        colors.len()
    ))
}

/// The checks themselves: they refuse what a broken report would render.
mod checks {
    use super::*;

    fn dom(sections: &[(&str, &str)]) -> String {
        let rows: String = sections
            .iter()
            .map(|_| "<tr class=\"pass\"></tr>")
            .collect();
        let body: String = sections
            .iter()
            .map(|(id, inner)| {
                format!("<section class=\"case pass\" id=\"{id}\">{inner}</section>")
            })
            .collect();
        format!("<html><body><table>{rows}</table>{body}</body></html>")
    }

    const CHART: &str = "<svg><rect></rect><line></line></svg>";

    #[test]
    fn the_dom_check_wants_every_section_in_order_with_one_chart() {
        let cases = [Case::Cl01, Case::Cl02];
        assert!(check_dom(&dom(&[("cl-01", CHART), ("cl-02", CHART)]), &cases).is_ok());
        for (broken, why) in [
            (dom(&[("cl-01", CHART)]), "a section missing"),
            (dom(&[("cl-02", CHART), ("cl-01", CHART)]), "out of order"),
            (
                dom(&[("cl-01", CHART), ("cl-02", "<p>no chart</p>")]),
                "no SVG",
            ),
            (
                dom(&[("cl-01", CHART), ("cl-02", "<svg></svg>")]),
                "an empty SVG",
            ),
            (
                dom(&[("cl-01", CHART), ("cl-02", &format!("{CHART}{CHART}"))]),
                "two SVGs",
            ),
        ] {
            assert!(check_dom(&broken, &cases).is_err(), "{why} passed");
        }
    }

    #[test]
    fn the_screenshot_check_refuses_a_blank_page() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("blank.png");
        let file = std::fs::File::create(&path).expect("create");
        let mut encoder = png::Encoder::new(file, WINDOW.0, WINDOW.1);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("header");
        let white = vec![255u8; (WINDOW.0 * WINDOW.1 * 3) as usize];
        writer.write_image_data(&white).expect("pixels");
        writer.finish().expect("finish");
        let error = check_screenshot(&path).expect_err("a blank page");
        assert!(error.contains("looks empty"), "{error}");
        let missing = check_screenshot(&dir.path().join("none.png")).expect_err("no file");
        assert!(missing.contains("no screenshot"), "{missing}");
    }
}
