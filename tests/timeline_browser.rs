//! The HTML timeline in a real browser: headless Chromium (Debian's `chromium` package, which
//! `.ci/run` installs) renders a page of a history with a fault and a violation, and the
//! screenshot must show the bars, the fault band and the outlined operations.

#![cfg(not(any(madsim, feature = "sim")))]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use sim::history::{EventKind, HistoryEvent};
use sim::timeline::{Band, render};

fn chromium() -> PathBuf {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("headless Chromium is needed (Debian package `chromium`): run .ci/run to install it");
}

fn op(process: u64, start: u64, end: u64, kind: EventKind, error: Option<&str>) -> [HistoryEvent; 2] {
    let mut invoke = HistoryEvent::new(process, EventKind::Invoke, "withdraw", start);
    invoke.key = Some("acct-1".into());
    invoke.value = Some(serde_json::json!("10.00"));
    let mut done = invoke.clone();
    done.kind = kind;
    done.time = end;
    done.error = error.map(str::to_string);
    [invoke, done]
}

/// Counts pixels within a small distance of an RGB colour.
fn count(pixels: &[u8], channels: usize, rgb: (u8, u8, u8)) -> usize {
    pixels
        .chunks(channels)
        .filter(|p| {
            let d = |a: u8, b: u8| (a as i32 - b as i32).abs();
            d(p[0], rgb.0) + d(p[1], rgb.1) + d(p[2], rgb.2) < 24
        })
        .count()
}

/// Goal: the timeline renders in a browser as drawn: one lane per client, ok bars green,
/// refusals amber, a fault as a violet band, the witness outlined in black.
/// Method: render a page, screenshot it in headless Chromium, count pixels of each colour.
#[test]
fn timeline_renders_in_headless_chromium() {
    let mut history = Vec::new();
    for p in 0..6u64 {
        let (kind, error) =
            if p % 2 == 0 { (EventKind::Ok, None) } else { (EventKind::Fail, Some("insufficient_funds")) };
        history.extend(op(p, p * 100_000_000, p * 100_000_000 + 400_000_000, kind, error));
    }
    let bands = vec![Band { label: "Crash crdb-2".into(), start: 150_000_000, end: Some(450_000_000) }];
    let highlight = BTreeSet::from([(1, 100_000_000), (2, 200_000_000)]);
    let dir = std::env::temp_dir().join(format!("timeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("timeline.html");
    std::fs::write(&page, render("browser test", &history, &bands, &highlight)).unwrap();
    let shot = dir.join("shot.png");
    let status = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1800,400",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&status.stderr));
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let pixels = &pixels[..info.buffer_size()];
    assert_eq!((info.width, info.height), (1800, 400));
    let green = count(pixels, channels, (0x2e, 0x9d, 0x55));
    let amber = count(pixels, channels, (0xe6, 0x9f, 0x00));
    let black = count(pixels, channels, (0, 0, 0));
    // The band is violet at 12% over white: a pale lilac.
    let band = count(pixels, channels, (0xee, 0xeb, 0xff));
    assert!(green > 3 * 300 * 10, "the ok bars: {green} green pixels");
    assert!(amber > 3 * 300 * 10, "the refused bars: {amber} amber pixels");
    assert!(black > 2 * 2 * 300, "the outlined witness: {black} black pixels");
    assert!(band > 100 * 100, "the fault band: {band} lilac pixels");
    std::fs::remove_dir_all(&dir).ok();
}
