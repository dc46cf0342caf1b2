//! The dashboard over real HTTP on `fundflow serve --embedded`: sign-in to a session cookie,
//! the overview's figures equal to the API's for the same period, the security headers, and
//! sign-out.

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};

use crate::analytics::load;
use crate::server::Server;

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `token`; the session cookie (`name=value`).
async fn sign_in(server: &Server, token: &str) -> String {
    let response = client()
        .post(format!("{}/sign-in", server.url))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(token), "the token is never in the cookie");
    cookie.split(';').next().unwrap().to_owned()
}

async fn page(server: &Server, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = client().get(format!("{}{path}", server.url));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

/// `fundflow_dashboard_reads_total{page, cache}` on the server's `/metrics` (0 before the
/// first).
async fn reads(server: &Server, page_name: &str, cache: &str) -> u64 {
    let text = page(server, "/metrics", None).await.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("fundflow_dashboard_reads_total{"))
        .filter(|l| l.contains(&format!(r#"page="{page_name}""#)))
        .filter(|l| l.contains(&format!(r#"cache="{cache}""#)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The text of the `<td class="num">` cells of the row `data-kind="{kind}"`.
fn kind_cells(html: &str, kind: &str) -> Vec<String> {
    let row = html
        .split(&format!(r#"<tr data-kind="{kind}">"#))
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row of {kind} in the overview"));
    row.split(r#"<td class="num">"#)
        .skip(1)
        .map(|cell| cell.split("</td>").next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reviewer_signs_in_and_the_overview_shows_the_apis_figures_for_the_year() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", dir.path(), &[], None).await;
    load(&server).await;
    let t = &server.tokens;

    let signed_out = page(&server, "/", None).await;
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_out.headers()[LOCATION], "/sign-in");

    let refused = client()
        .post(format!("{}/sign-in", server.url))
        .form(&[("token", "fft_not-a-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get(SET_COOKIE).is_none());
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("token: this token is not known")
    );

    let cookie = sign_in(&server, &t.reviewer).await;
    for (from, to) in [("2020-01-01", "2020-12-31"), ("2021-01-01", "2021-12-31")] {
        let response = page(&server, &format!("/?from={from}&to={to}"), Some(&cookie)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let csp = response.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        let html = response.text().await.unwrap();
        assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));

        let (status, summary) = server
            .get(
                &format!("/v1/summary?from={from}&to={to}"),
                Some(&t.reviewer),
            )
            .await;
        assert_eq!(status, 200, "{summary}");
        let kinds = summary["by_kind"].as_array().unwrap();
        assert_eq!(kinds.len(), 4);
        for kind in kinds {
            let name = kind["kind"].as_str().unwrap();
            let cells = kind_cells(&html, name);
            assert_eq!(
                cells,
                [
                    format!("USD {}", kind["usd_equivalent"].as_str().unwrap()),
                    kind["countries"].to_string()
                ],
                "{from}..{to} {name}"
            );
        }
        let benefiting = summary["countries_benefiting"].as_u64().unwrap();
        assert!(
            html.contains(&format!(
                r#"<dd id="countries-benefiting">{benefiting}</dd>"#
            )),
            "{from}..{to}"
        );
        let seq = summary["as_of_seq"].as_u64().unwrap();
        assert!(html.contains(&format!(r#"<strong id="as-of-seq">{seq}</strong>"#)));
    }

    // The default period is the latest year with data.
    let html = page(&server, "/", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"id="from" name="from" type="date" value="2021-01-01""#));

    let stylesheet = page(&server, "/assets/dashboard.css", None).await;
    assert_eq!(stylesheet.status(), StatusCode::OK);
    assert_eq!(stylesheet.headers()[CACHE_CONTROL], "private, max-age=3600");

    let out = client()
        .post(format!("{}/sign-out", server.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = page(&server, "/", Some(&cookie)).await;
    assert_eq!(after.status(), StatusCode::SEE_OTHER, "the session ended");

    // A partner's session starts at its own flows and opens no page of the programme's, nor
    // the API's totals.
    let partner = sign_in(&server, &t.icshp).await;
    let start = page(&server, "/", Some(&partner)).await;
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    assert_eq!(start.headers()[LOCATION], "/flows");
    for path in [
        "/recipients",
        "/partners",
        "/in-kind",
        "/rejections",
        "/recipients/KEN",
    ] {
        let refused = page(&server, path, Some(&partner)).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(
            refused.headers().contains_key(CONTENT_SECURITY_POLICY),
            "{path}"
        );
    }
    assert_eq!(
        page(&server, "/v1/totals", Some(&partner)).await.status(),
        StatusCode::FORBIDDEN
    );
    let own = page(&server, "/flows", Some(&partner)).await;
    assert_eq!(own.status(), StatusCode::OK);
    let own = own.text().await.unwrap();
    assert!(
        own.contains(r#"<span class="partner">icshp</span>"#),
        "{own}"
    );
    assert!(
        !own.contains(r#"<span class="partner">cabc</span>"#),
        "{own}"
    );
    assert_eq!(
        page(&server, "/flows?partner=cabc", Some(&partner))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_answers_a_reviewer_and_bad_filters_get_a_page_naming_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start("serve", dir.path(), &[], None).await;
    load(&server).await;
    let cookie = sign_in(&server, &server.tokens.reviewer).await;
    for path in [
        "/",
        "/recipients",
        "/recipients?region=014&from=2020-01-01&to=2020-12-31",
        "/recipients/KEN",
        "/pledges?status=open",
        "/partners?partner=cabc",
        "/in-kind",
        "/flows?country=KE&status=all",
        "/rejections",
    ] {
        let response = page(&server, path, Some(&cookie)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store", "{path}");
        let html = response.text().await.unwrap();
        assert!(html.contains(r#"<html lang="en">"#), "{path}");
        assert!(html.contains(r#"id="as-of-seq""#), "{path}");
    }
    // A form's empty controls are dropped from the address.
    let untidy = page(
        &server,
        "/flows?kind=&partner=&country=KE&status=all",
        Some(&cookie),
    )
    .await;
    assert_eq!(untidy.status(), StatusCode::SEE_OTHER);
    assert_eq!(untidy.headers()[LOCATION], "/flows?country=KE&status=all");
    for (path, status, says) in [
        (
            "/recipients?region=999",
            StatusCode::NOT_FOUND,
            "is not an M49 area code",
        ),
        ("/flows?from=2020-13-01", StatusCode::BAD_REQUEST, "from"),
        ("/pledges?status=late", StatusCode::BAD_REQUEST, "status"),
        ("/flows?colour=red", StatusCode::BAD_REQUEST, "colour"),
        ("/rejections?cursor=x", StatusCode::BAD_REQUEST, "cursor"),
    ] {
        let response = page(&server, path, Some(&cookie)).await;
        assert_eq!(response.status(), status, "{path}");
        let html = response.text().await.unwrap();
        assert!(html.contains(says), "{path}: {html}");
    }
    // A reversal of nothing reaches the log and is rejected by the fold: the data-quality API
    // and page list it with its code and field, newest first, a page at a time.
    let partners_read = reads(&server, "partners", "miss").await;
    for target in ["nothing-1", "nothing-2"] {
        let undo = serde_json::json!({"type": "event_reversed", "ref": format!("undo-{target}"),
            "occurred_on": "2021-03-01", "reverses_ref": target, "reason": "typo"});
        let (status, body) = server.submit(&server.tokens.cabc, &undo, true).await;
        assert_eq!(status, 422, "{body}");
    }
    let (status, body) = server
        .get("/v1/rejections?limit=1", Some(&server.tokens.reviewer))
        .await;
    assert_eq!(status, 200, "{body}");
    let first = &body["rejections"][0];
    assert_eq!(first["partner"], "cabc", "{body}");
    assert_eq!(first["field"], "reverses_event_id", "{body}");
    assert_eq!(first["code"], "reversal_target_unknown", "{body}");
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let (_, older) = server
        .get(
            &format!("/v1/rejections?limit=1&cursor={cursor}"),
            Some(&server.tokens.reviewer),
        )
        .await;
    assert_eq!(older["rejections"].as_array().unwrap().len(), 1, "{older}");
    assert!(older["rejections"][0]["seq"].as_u64() < first["seq"].as_u64());
    assert_eq!(older["next_cursor"], serde_json::Value::Null);
    // Those batches made new checkpoints: with a reviewer signed in, the server reads the
    // default overview and partners page ahead (at most every 2 s), so the next reviewer to open
    // the overview is answered from the cache.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while reads(&server, "partners", "miss").await <= partners_read {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was read ahead: {}",
            page(&server, "/metrics", None).await.text().await.unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let hits = reads(&server, "overview", "hit").await;
    assert_eq!(
        page(&server, "/", Some(&cookie)).await.status(),
        StatusCode::OK
    );
    assert_eq!(reads(&server, "overview", "hit").await, hits + 1);
    // The CLI's counterpart prints the API's CSV.
    let csv = crate::helpers::fundflow_ok(&[
        "rejections",
        "--url",
        &server.url,
        "--token",
        &server.tokens.auditor,
        "--format",
        "csv",
    ]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "seq,event_id,partner,code,field,message");
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[1].contains(",cabc,reversal_target_unknown,reverses_event_id,"),
        "{csv}"
    );
    let html = page(&server, "/rejections", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        html.matches(r#"<code class="code">reversal_target_unknown</code>"#)
            .count(),
        2,
        "{html}"
    );
    server.terminate().await;
}
