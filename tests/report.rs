//! The HTML reports of `scorecard fit --html` and `replay --html`, rendered in headless Chromium:
//! every chart must be drawn by the page's own script, with no network.
//!
//! Needs Chromium (Debian: `apt-get install chromium`; `.ci/run` installs it and sets
//! `TRIPWIRE_REQUIRE_CHROMIUM=1`, which makes a missing browser a failure rather than a skip).

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tripwire");

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|name| PathBuf::from("/usr/bin").join(name))
        .find(|p| p.exists());
    if found.is_none() {
        if std::env::var("TRIPWIRE_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1") {
            panic!(
                "TRIPWIRE_REQUIRE_CHROMIUM=1 but no Chromium in /usr/bin (apt-get install chromium)"
            );
        }
        eprintln!(
            "\n*** skipped: install chromium to render the HTML reports (apt-get install chromium) ***\n"
        );
    }
    found
}

/// The DOM after the page's scripts ran.
fn rendered(browser: &Path, page: &Path, profile: &Path) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
            "--virtual-time-budget=5000",
            "--dump-dom",
            &format!("file://{}", page.display()),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(args: &[&str]) {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_fit_and_replay_reports_draw_every_chart_in_a_browser() {
    let Some(browser) = chromium() else {
        return;
    };
    let d = std::env::temp_dir().join(format!("tripwire-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let example = |f: &str| format!("{}/examples/card/{f}", env!("CARGO_MANIFEST_DIR"));
    run(&[
        "gen",
        "--profile",
        "card",
        "--customers",
        "300",
        "--days",
        "45",
        "--seed",
        "2",
        "--out",
        &p("card.csv"),
    ]);
    run(&[
        "scorecard",
        "fit",
        "--rules",
        &example("rules.yaml"),
        "--characteristics",
        &example("characteristics.yaml"),
        "--label-delay",
        "7d",
        "--train-from",
        "2026-03-15",
        "--train-until",
        "2026-04-01",
        "--test-from",
        "2026-04-01",
        "--test-until",
        "2026-04-14",
        "--min-bin-share",
        "0.01",
        "--json",
        "--html",
        &p("fit.html"),
        &p("card.csv"),
    ]);
    run(&[
        "replay",
        "--rules",
        &example("rules.yaml"),
        "--against",
        &format!("{}/rules.yaml", env!("CARGO_MANIFEST_DIR")),
        "--label-delay",
        "7d",
        "--json",
        "--html",
        &p("replay.html"),
        &p("card.csv"),
    ]);
    for (page, charts) in [
        (
            "fit.html",
            ["roc", "ks", "histogram", "bad-rate", "iv"].as_slice(),
        ),
        (
            "replay.html",
            [
                "rule-hits",
                "rule-precision",
                "decisions-over-time",
                "changes",
            ]
            .as_slice(),
        ),
    ] {
        let html = std::fs::read_to_string(d.join(page)).unwrap();
        assert!(
            !html.contains("<script src") && !html.contains("<link") && !html.contains("https://"),
            "{page} loads nothing from the network"
        );
        let dom = rendered(&browser, &d.join(page), &d.join(format!("profile-{page}")));
        assert!(
            dom.contains(&format!("data-charts-drawn=\"{}\"", charts.len())),
            "{page}: {}",
            &dom[..dom.len().min(2000)]
        );
        for chart in charts {
            let at = dom
                .find(&format!("data-chart=\"{chart}\""))
                .unwrap_or_else(|| panic!("{page}: no {chart}"));
            let svg = &dom[at..at + dom[at..].find("</svg>").unwrap()];
            assert!(
                svg.contains("data-drawn=\"1\""),
                "{page}: {chart} not drawn"
            );
            assert!(
                svg.contains("<polyline") || svg.contains("class=\"bar\""),
                "{page}: {chart} has no marks"
            );
        }
    }
    std::fs::remove_dir_all(&d).ok();
}
