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

    // A partner's session does not open the programme's overview.
    let partner = sign_in(&server, &t.icshp).await;
    assert_eq!(
        page(&server, "/", Some(&partner)).await.status(),
        StatusCode::FORBIDDEN
    );
}
