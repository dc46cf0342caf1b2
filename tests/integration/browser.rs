//! The dashboard in a real browser: Debian's chromium, headless, driven through chromedriver
//! (WebDriver) by fantoccini, against `fundflow serve --embedded` with the seed scenario. It
//! signs in, checks every page's figures against the API's, drills down from the World to a
//! country by clicks, follows a CSV link, changes a filter, reads the browser's console, and
//! checks that a partner sees only its own flows. Screenshots of each page at 375 and 1440 px go
//! to `target/tmp/dashboard-screenshots/`.
//!
//! Needs `chromium` and `chromium-driver` (`deploy/browser/install-chromium.sh` installs them;
//! `FUNDFLOW_CHROMIUM` and `FUNDFLOW_CHROMEDRIVER` name other binaries).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::analytics::load;
use crate::server::Server;

/// A chromedriver on a free port, killed on drop, and one headless chromium session on it.
struct Browser {
    driver: Child,
    driver_url: String,
    client: Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn binary(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_owned())
}

impl Browser {
    async fn start() -> Browser {
        let chromedriver = binary("FUNDFLOW_CHROMEDRIVER", "chromedriver");
        let chromium = binary("FUNDFLOW_CHROMIUM", "/usr/bin/chromium");
        let port = fundflow_testkit::free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {chromedriver} ({e}): install chromium and chromium-driver with \
                     deploy/browser/install-chromium.sh"
                )
            });
        let driver_url = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&driver_url)
                .await
            {
                Ok(client) => break client,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("chromedriver at {driver_url} gave no session: {err}"),
            }
        };
        Browser {
            driver,
            driver_url,
            client,
            _profile: profile,
        }
    }

    /// The browser's console since the last call (chromedriver's log endpoint), as
    /// (level, message).
    async fn console(&self) -> Vec<(String, String)> {
        let session = self.client.session_id().await.unwrap().unwrap();
        let reply: Value = reqwest::Client::new()
            .post(format!("{}/session/{session}/se/log", self.driver_url))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        reply["value"]
            .as_array()
            .unwrap_or_else(|| panic!("no console log from chromedriver: {reply}"))
            .iter()
            .map(|entry| {
                (
                    entry["level"].as_str().unwrap_or("").to_owned(),
                    entry["message"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits until the browser is at `expected` (a click's navigation, and its redirects, may
    /// still be under way when the click returns): at most 10 s, then fails with where it is.
    async fn arrive(&self, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let path = self.path().await;
            if path == expected {
                return;
            }
            assert!(Instant::now() < deadline, "at {path}, not {expected}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
            .text()
            .await
            .unwrap()
    }

    async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await.unwrap() {
            texts.push(element.text().await.unwrap());
        }
        texts
    }

    /// Clicks the link `text` and waits until the browser has left the page.
    async fn click_link(&self, text: &str) {
        let before = self.path().await;
        self.client
            .find(Locator::LinkText(text))
            .await
            .unwrap_or_else(|e| panic!("no link {text:?} on {before}: {e}"))
            .click()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.path().await == before {
            assert!(
                Instant::now() < deadline,
                "the link {text:?} led nowhere from {before}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Screenshots of the page shown at both widths.
    async fn screenshots(&self, name: &str) {
        let dir = screenshot_dir();
        for (width, height) in [(375, 1400), (1440, 1100)] {
            self.client.set_window_size(width, height).await.unwrap();
            let png = self.client.screenshot().await.unwrap();
            assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
            std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
        }
    }
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text.trim().trim_start_matches("USD ").trim())
        .unwrap_or_else(|e| panic!("{text:?} is not a decimal: {e}"))
}

/// The USD equivalent of `kind` in a `/v1/summary` reply.
fn summary_usd(summary: &Value, kind: &str) -> String {
    summary["by_kind"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == kind)
        .unwrap()["usd_equivalent"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The sum of the USD equivalents of `kind` in a totals reply's rows that `pick` keeps.
fn totals_usd(totals: &Value, kind: &str, pick: impl Fn(&Value) -> bool) -> Decimal {
    totals["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == kind && pick(r))
        .map(|r| dec(r["usd_equivalent"].as_str().unwrap()))
        .sum()
}

async fn sign_in(browser: &Browser, server: &Server, token: &str) {
    browser
        .client
        .goto(&format!("{}/sign-in", server.url))
        .await
        .unwrap();
    let field = browser.client.find(Locator::Id("token")).await.unwrap();
    field.send_keys(token).await.unwrap();
    browser
        .client
        .find(Locator::Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reviewer_reads_every_page_in_a_browser_with_the_apis_figures_and_a_partner_only_its_own()
{
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", dir.path(), &[], None).await;
    load(&server).await;
    let t = &server.tokens;
    let browser = Browser::start().await;
    let b = &browser;

    // Signed out, a page sends the browser to sign-in.
    b.client
        .goto(&format!("{}/recipients?region=002", server.url))
        .await
        .unwrap();
    b.arrive("/sign-in").await;
    b.screenshots("sign-in").await;

    // Signed in, the overview is the latest year's (2021), with the summary's figures.
    sign_in(b, &server, &t.reviewer).await;
    b.arrive("/").await;
    let (_, summary_2021) = server
        .get(
            "/v1/summary?from=2021-01-01&to=2021-12-31",
            Some(&t.reviewer),
        )
        .await;
    for kind in ["pledged", "paid", "parallel_funding", "in_kind"] {
        let cell = b.text(&format!(r#"tr[data-kind="{kind}"] td.num"#)).await;
        assert_eq!(
            cell,
            format!("USD {}", summary_usd(&summary_2021, kind)),
            "{kind}"
        );
    }
    b.screenshots("overview").await;

    // A filter change (the year 2020) is in the URL and in the figures.
    b.click_link("2020").await;
    b.arrive("/?from=2020-01-01&to=2020-12-31").await;
    let (_, summary_2020) = server
        .get(
            "/v1/summary?from=2020-01-01&to=2020-12-31",
            Some(&t.reviewer),
        )
        .await;
    assert_eq!(
        b.text(r#"tr[data-kind="parallel_funding"] td.num"#).await,
        format!("USD {}", summary_usd(&summary_2020, "parallel_funding"))
    );
    assert_eq!(summary_usd(&summary_2020, "parallel_funding"), "258800.00");
    assert_eq!(
        b.text("#countries-benefiting").await,
        summary_2020["countries_benefiting"].to_string()
    );

    // The drill-down, by clicks: World → Africa → Sub-Saharan Africa → Eastern Africa → Kenya.
    b.click_link("Recipients").await;
    b.arrive("/recipients").await;
    let (_, all) = server.get("/v1/totals", Some(&t.reviewer)).await;
    b.screenshots("recipients").await;
    for (area, key) in [
        ("Africa", "002"),
        ("Sub-Saharan Africa", "202"),
        ("Eastern Africa", "014"),
    ] {
        b.click_link(area).await;
        b.arrive(&format!("/recipients?region={key}")).await;
        assert_eq!(b.text("h1").await, format!("Recipients in {area}"));
    }
    b.screenshots("recipients-eastern-africa").await;
    // The rows add up to the area's total, which is the API's, kind by kind; COMESA's masks
    // are the row allocated to Eastern Africa directly.
    let rows = b.texts("#areas tbody tr").await;
    assert!(
        rows.iter().any(|r| r.starts_with("Ethiopia"))
            && rows.iter().any(|r| r.starts_with("Kenya")),
        "{rows:?}"
    );
    let direct = b.texts("#areas tr[data-direct] td.num").await;
    assert_eq!(direct, ["0.00", "0.00", "0.00", "750.00"]);
    let totals = b.texts("#area-total td.num").await;
    for (index, kind) in ["pledged", "paid", "parallel_funding", "in_kind"]
        .iter()
        .enumerate()
    {
        let mut sum = Decimal::ZERO;
        for row in b
            .client
            .find_all(Locator::Css("#areas tbody tr"))
            .await
            .unwrap()
        {
            let cells = row.find_all(Locator::Css("td.num")).await.unwrap();
            sum += dec(&cells[index].text().await.unwrap());
        }
        assert_eq!(sum, dec(&totals[index]), "{kind}: the rows add up");
        let api = totals_usd(&all, kind, |r| {
            r["scope"] == "intermediate" && r["key"] == "014"
        });
        assert_eq!(
            dec(&totals[index]),
            api,
            "{kind}: the API's total of Eastern Africa"
        );
    }
    b.click_link("Kenya").await;
    b.arrive("/recipients/KEN").await;
    let kenya = b.texts("#country-totals tbody tr").await;
    let (_, api_kenya) = server
        .get("/v1/totals?scope=country&key=KEN", Some(&t.reviewer))
        .await;
    let api_rows = api_kenya["rows"].as_array().unwrap();
    assert_eq!(kenya.len(), api_rows.len(), "{kenya:?}");
    for row in api_rows {
        let amount = row["amount"].as_str().unwrap();
        assert!(
            kenya.iter().any(|r| r.contains(amount)),
            "{amount} of {} is on Kenya's page: {kenya:?}",
            row["kind"]
        );
    }
    assert!(
        !b.texts("#flows li.flow").await.is_empty(),
        "Kenya's flows are listed"
    );
    b.screenshots("country-kenya").await;

    // A CSV link returns what the API returns for the same filters, in this browser's session.
    b.click_link("Recipients").await;
    let csv_link = b
        .client
        .find(Locator::LinkText("Download CSV"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(csv_link, "/v1/totals?format=csv");
    let session = b.client.get_named_cookie("fundflow_session").await.unwrap();
    assert!(
        session.http_only().unwrap_or(false),
        "the session cookie is HttpOnly"
    );
    let from_page = reqwest::Client::new()
        .get(format!("{}{csv_link}", server.url))
        .header("cookie", format!("fundflow_session={}", session.value()))
        .send()
        .await
        .unwrap();
    assert_eq!(from_page.status(), 200);
    let from_page = from_page.text().await.unwrap();
    let from_api = reqwest::Client::new()
        .get(format!("{}/v1/totals?format=csv", server.url))
        .bearer_auth(&t.reviewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(from_page, from_api);
    assert!(
        from_page.starts_with("scope,key,name,kind,currency"),
        "{from_page}"
    );

    // The pledge book: the small grant's balance and its parallel funding, as the API has them.
    b.click_link("Pledges").await;
    let (_, book) = server.get("/v1/pledges", Some(&t.reviewer)).await;
    let pledge = book["pledges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pledge_id"] == "sg-2020-01")
        .unwrap();
    for field in ["pledged", "paid", "outstanding"] {
        assert_eq!(
            b.text(&format!(r#"tr[data-pledge="sg-2020-01"] td.{field}"#))
                .await,
            pledge[field].as_str().unwrap(),
            "{field}"
        );
    }
    b.screenshots("pledges").await;

    // Partners, in kind, data quality: each renders its table.
    b.click_link("Partners").await;
    let (_, by_partner) = server
        .get(
            "/v1/totals?scope=global&group_by=partner,year",
            Some(&t.reviewer),
        )
        .await;
    let rows = b.texts("#partners tbody tr").await;
    let api_rows: BTreeSet<(String, String)> = by_partner["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (text(&r["partner"]), text(&r["year"])))
        .collect();
    assert_eq!(
        rows.len(),
        api_rows.len(),
        "one row per partner and year: {rows:?}"
    );
    let cells = b
        .texts(r#"#partners tr[data-partner="icshp"][data-year="2020"] td.num"#)
        .await;
    for (index, kind) in ["pledged", "paid", "parallel_funding", "in_kind"]
        .iter()
        .enumerate()
    {
        let api = totals_usd(&by_partner, kind, |r| {
            r["partner"] == "icshp" && r["year"] == "2020"
        });
        assert_eq!(dec(&cells[index]), api, "icshp 2020 {kind}");
    }
    b.screenshots("partners").await;
    b.click_link("In kind").await;
    assert!(
        b.text("section.goods[data-recipient=\"NPL\"]")
            .await
            .contains("210000")
    );
    b.screenshots("in-kind").await;
    b.click_link("Data quality").await;
    assert_eq!(b.text("h1").await, "Rejected events");
    b.screenshots("rejections").await;

    // The flows' filter bar: choosing a kind puts it in the address, and only it (the empty
    // controls are dropped), and the list is the API's for it.
    b.click_link("Flows").await;
    b.client
        .find(Locator::Css(r#"#f-kind option[value="in_kind"]"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.client
        .find(Locator::Css("form.filters button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.arrive("/flows?kind=in_kind&status=applied").await;
    let kinds = b.texts("li.flow summary .kind").await;
    let (_, api_in_kind) = server
        .get("/v1/flows?kind=in_kind", Some(&t.reviewer))
        .await;
    assert_eq!(kinds.len(), api_in_kind["flows"].as_array().unwrap().len());
    assert!(
        !kinds.is_empty() && kinds.iter().all(|k| k == "in_kind"),
        "{kinds:?}"
    );

    // The flows: a reversed one opens to its reversal and reason.
    b.client
        .goto(&format!("{}/flows?status=reversed", server.url))
        .await
        .unwrap();
    let (_, api_reversed) = server
        .get("/v1/flows?status=reversed", Some(&t.reviewer))
        .await;
    let mut seqs = Vec::new();
    for li in b.client.find_all(Locator::Css("li.flow")).await.unwrap() {
        seqs.push(li.attr("data-seq").await.unwrap().unwrap());
    }
    let api_seqs: Vec<String> = api_reversed["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["seq"].to_string())
        .collect();
    assert_eq!(seqs, api_seqs, "the reversed flows, in the API's order");
    assert_eq!(seqs.len(), 2);
    let reversed = b
        .client
        .find(Locator::Css("li.flow summary"))
        .await
        .unwrap();
    reversed.click().await.unwrap();
    let opened = b.text("li.flow dl.event").await;
    assert!(
        opened.contains("entered in error") || opened.contains("pledge withdrawn"),
        "{opened}"
    );
    b.screenshots("flows").await;

    // Nothing on any page wrote to the console (a CSP violation, a missing asset).
    let console = b.console().await;
    assert!(
        console
            .iter()
            .all(|(level, _)| level != "SEVERE" && level != "WARNING"),
        "console errors: {console:?}"
    );

    // Signed out, then in as a partner: its own flows only, and no reviewer page.
    b.client
        .find(Locator::Css("form.who button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.arrive("/sign-in").await;
    sign_in(b, &server, &t.icshp).await;
    // A partner starts at its own flows.
    b.arrive("/flows").await;
    let partners = b.texts("li.flow summary .partner").await;
    assert!(!partners.is_empty());
    assert!(partners.iter().all(|p| p == "icshp"), "{partners:?}");
    let nav = b.texts("header nav a").await;
    assert_eq!(nav, ["Pledges", "Flows"]);
    b.client
        .goto(&format!("{}/recipients", server.url))
        .await
        .unwrap();
    assert_eq!(b.text("h1").await, "Not for partners");
    b.client
        .goto(&format!("{}/flows?partner=cabc", server.url))
        .await
        .unwrap();
    assert_eq!(b.text("h1").await, "Not yours");

    browser.client.clone().close().await.unwrap();
    server.terminate().await;
}
